// Package promtext writes the Prometheus text exposition format 0.0.4 with the
// standard library only, and holds the few lock-free instruments gosvc needs
// (counters, gauges, a fixed-bucket histogram).
//
// The writer is deliberately dumb: callers emit one metric family at a time
// (HELP, TYPE, then its samples), which is exactly what the format requires and
// what Validate checks.
package promtext

import (
	"bufio"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
)

// ContentType is the media type of the text exposition format 0.0.4.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Label is one name="value" pair. A slice keeps label order stable in output.
type Label struct {
	Name, Value string
}

// Writer emits metric families. Errors are sticky: check Err or Flush at the end.
type Writer struct {
	w   *bufio.Writer
	err error
}

// NewWriter wraps w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: bufio.NewWriter(w)} }

func (w *Writer) str(s string) {
	if w.err == nil {
		_, w.err = w.w.WriteString(s)
	}
}

// Header writes the HELP and TYPE lines of a family. typ is counter, gauge,
// histogram, summary or untyped.
func (w *Writer) Header(name, help, typ string) {
	w.str("# HELP " + name + " " + escapeHelp(help) + "\n")
	w.str("# TYPE " + name + " " + typ + "\n")
}

// Sample writes one sample line.
func (w *Writer) Sample(name string, labels []Label, v float64) {
	w.str(name)
	if len(labels) > 0 {
		w.str("{")
		for i, l := range labels {
			if i > 0 {
				w.str(",")
			}
			w.str(l.Name + `="` + escapeLabel(l.Value) + `"`)
		}
		w.str("}")
	}
	w.str(" " + FormatFloat(v) + "\n")
}

// Single writes a whole family that has exactly one unlabeled sample.
func (w *Writer) Single(name, help, typ string, v float64) {
	w.Header(name, help, typ)
	w.Sample(name, nil, v)
}

// Flush flushes buffered output and returns the first error seen.
func (w *Writer) Flush() error {
	if w.err == nil {
		w.err = w.w.Flush()
	}
	return w.err
}

// FormatFloat renders a sample value the way Prometheus expects.
func FormatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
var labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }

// Counter is a monotonically increasing integer counter.
type Counter struct{ v atomic.Uint64 }

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Add adds n.
func (c *Counter) Add(n uint64) { c.v.Add(n) }

// Value reads the counter.
func (c *Counter) Value() uint64 { return c.v.Load() }

// Gauge is an integer gauge.
type Gauge struct{ v atomic.Int64 }

// Add adds d (which may be negative).
func (g *Gauge) Add(d int64) { g.v.Add(d) }

// Set sets the gauge.
func (g *Gauge) Set(v int64) { g.v.Store(v) }

// Value reads the gauge.
func (g *Gauge) Value() int64 { return g.v.Load() }

// Histogram is a fixed-bucket, lock-free histogram of float64 observations.
// Bucket counts are stored non-cumulatively and summed at exposition, so the
// +Inf bucket always equals _count in one snapshot.
type Histogram struct {
	upper   []float64 // sorted upper bounds, +Inf excluded
	counts  []atomic.Uint64
	sumBits atomic.Uint64
}

// NewHistogram builds a histogram with the given (sorted, finite) upper bounds.
func NewHistogram(upper []float64) *Histogram {
	u := append([]float64(nil), upper...)
	sort.Float64s(u)
	return &Histogram{upper: u, counts: make([]atomic.Uint64, len(u)+1)}
}

// Observe records v.
func (h *Histogram) Observe(v float64) {
	i := sort.SearchFloat64s(h.upper, v) // first bound >= v, so v lands in le=bound
	h.counts[i].Add(1)
	for {
		old := h.sumBits.Load()
		if h.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// Snapshot returns the cumulative bucket counts (the last is +Inf), the count and the sum.
func (h *Histogram) Snapshot() (bounds []float64, cumulative []uint64, count uint64, sum float64) {
	cumulative = make([]uint64, len(h.counts))
	var acc uint64
	for i := range h.counts {
		acc += h.counts[i].Load()
		cumulative[i] = acc
	}
	bounds = append(append([]float64(nil), h.upper...), math.Inf(1))
	return bounds, cumulative, acc, math.Float64frombits(h.sumBits.Load())
}

// WriteHistogram writes the samples of a histogram series (no header) with the
// given base labels; call Header(name, help, "histogram") first.
func (w *Writer) WriteHistogram(name string, labels []Label, bounds []float64, cumulative []uint64, count uint64, sum float64) {
	bl := make([]Label, len(labels)+1)
	copy(bl, labels)
	for i, b := range bounds {
		bl[len(labels)] = Label{"le", FormatFloat(b)}
		w.Sample(name+"_bucket", bl, float64(cumulative[i]))
	}
	w.Sample(name+"_sum", labels, sum)
	w.Sample(name+"_count", labels, float64(count))
}

// LatencyBuckets are the upper bounds (seconds) of the request-duration
// histogram: about ten per decade (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7.5) from
// 0.1 ms to 2 s, so a P99 between 0.5 ms and 200 ms is resolved to ~25 %.
func LatencyBuckets() []float64 {
	mant := []float64{1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7.5}
	var out []float64
	for _, dec := range []float64{1e-4, 1e-3, 1e-2, 1e-1} {
		for _, m := range mant {
			out = append(out, round12(m*dec))
		}
	}
	return append(out, 1, 1.2, 1.5, 2)
}

// round12 removes binary noise such as 0.00030000000000000003.
func round12(v float64) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 12, 64), 64)
	return f
}

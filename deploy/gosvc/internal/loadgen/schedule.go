package loadgen

import (
	"fmt"
	"math"
	"time"
)

// Schedule is the target request rate over time (seconds since start).
type Schedule interface {
	RateAt(t float64) float64
	// Length is how long the schedule lasts in seconds (+Inf for unbounded).
	Length() float64
	String() string
}

// Constant is a fixed rate.
type Constant struct{ QPS float64 }

func (c Constant) RateAt(float64) float64 { return c.QPS }
func (c Constant) Length() float64        { return math.Inf(1) }
func (c Constant) String() string         { return fmt.Sprintf("constant %g qps", c.QPS) }

// Ramp steps the rate: Start + Step*k during [k*StepSeconds, (k+1)*StepSeconds),
// for Steps steps (0 = unbounded).
type Ramp struct {
	Start, Step, StepSeconds float64
	Steps                    int
}

func (r Ramp) RateAt(t float64) float64 {
	k := math.Floor(t / r.StepSeconds)
	if r.Steps > 0 && k >= float64(r.Steps) {
		k = float64(r.Steps - 1)
	}
	return math.Max(0, r.Start+r.Step*k)
}

func (r Ramp) Length() float64 {
	if r.Steps <= 0 {
		return math.Inf(1)
	}
	return float64(r.Steps) * r.StepSeconds
}

func (r Ramp) String() string {
	return fmt.Sprintf("ramp from %g qps by %g every %gs for %d steps", r.Start, r.Step, r.StepSeconds, r.Steps)
}

// RampSteps is how many steps a ramp takes to reach maxRate (inclusive).
func RampSteps(start, step, maxRate float64) int {
	if step <= 0 {
		return 1
	}
	return int(math.Floor((maxRate-start)/step+1e-9)) + 1
}

// Trace replays requests-per-interval values: value i lasts Interval/TimeScale
// of wall time at Value*Scale/Interval requests per second. TimeScale compresses
// the timeline while keeping the trace's per-second rate; Scale maps the trace
// onto the service's capacity.
type Trace struct {
	Values    []float64
	Interval  time.Duration
	Scale     float64
	TimeScale float64
}

func (tr Trace) segment() float64 { return tr.Interval.Seconds() / tr.TimeScale }

func (tr Trace) RateAt(t float64) float64 {
	i := int(t / tr.segment())
	if i < 0 || i >= len(tr.Values) {
		return 0
	}
	return tr.Values[i] * tr.Scale / tr.Interval.Seconds()
}

func (tr Trace) Length() float64 { return float64(len(tr.Values)) * tr.segment() }

func (tr Trace) String() string {
	return fmt.Sprintf("trace of %d values per %s, scale %g, time scale %g (%.1fs)", len(tr.Values), tr.Interval, tr.Scale, tr.TimeScale, tr.Length())
}

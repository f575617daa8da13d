package promtext

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestWriterOutputParses(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Single("a_total", "A counter.", "counter", 3)
	w.Header("info", "Info with \\ and\nnewline.", "gauge")
	w.Sample("info", []Label{{"version", `go"1\x`}}, 1)
	h := NewHistogram(LatencyBuckets())
	for _, v := range []float64{0.00005, 0.0005, 0.02, 0.02, 0.199, 3} {
		h.Observe(v)
	}
	w.Header("lat_seconds", "Latency.", "histogram")
	b, c, n, s := h.Snapshot()
	w.WriteHistogram("lat_seconds", []Label{{"handler", "/work"}}, b, c, n, s)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	fams, err := Parse(&buf)
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, buf.String())
	}
	if v, _ := fams["info"].Find("info", map[string]string{"version": `go"1\x`}); v != 1 {
		t.Fatalf("label round trip failed: %+v", fams["info"])
	}
	lat := fams["lat_seconds"]
	if v, _ := lat.Find("lat_seconds_count", nil); v != 6 {
		t.Fatalf("count = %v", v)
	}
	if v, _ := lat.Find("lat_seconds_bucket", map[string]string{"le": "0.0005"}); v != 2 {
		t.Fatalf("le=0.0005 bucket = %v, want 2 (le is inclusive)", v)
	}
	if v, _ := lat.Find("lat_seconds_bucket", map[string]string{"le": "0.2"}); v != 5 {
		t.Fatalf("le=0.2 bucket = %v", v)
	}
	if v, _ := lat.Find("lat_seconds_sum", nil); math.Abs(v-3.23955) > 1e-9 {
		t.Fatalf("sum = %v", v)
	}
}

func TestLatencyBuckets(t *testing.T) {
	b := LatencyBuckets()
	if len(b) < 40 || b[0] != 0.0001 || b[len(b)-1] != 2 {
		t.Fatalf("buckets %v", b)
	}
	want := map[float64]bool{0.0005: false, 0.001: false, 0.01: false, 0.1: false, 0.2: false}
	for i, v := range b {
		if i > 0 && (v <= b[i-1] || v/b[i-1] > 1.34) {
			t.Fatalf("bucket %d (%v) not log-spaced after %v", i, v, b[i-1])
		}
		if _, ok := want[v]; ok {
			want[v] = true
		}
	}
	for v, ok := range want {
		if !ok {
			t.Fatalf("bucket %v missing from %v", v, b)
		}
	}
}

func TestParseRejects(t *testing.T) {
	cases := map[string]string{
		"no type":          "# HELP x X.\nx 1\n",
		"no help":          "# TYPE x gauge\nx 1\n",
		"non-cumulative":   "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_bucket{le=\"2\"} 3\nh_bucket{le=\"+Inf\"} 5\nh_sum 1\nh_count 5\n",
		"inf != count":     "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
		"no inf":           "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
		"le order":         "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
		"negative counter": "# HELP c C.\n# TYPE c counter\nc -1\n",
		"duplicate":        "# HELP g G.\n# TYPE g gauge\ng 1\ng 2\n",
		"not contiguous":   "# HELP g G.\n# TYPE g gauge\ng{a=\"1\"} 1\n# HELP k K.\n# TYPE k gauge\nk 1\ng{a=\"2\"} 1\n",
		"bad label":        "# HELP g G.\n# TYPE g gauge\ng{a=1} 1\n",
		"bad value":        "# HELP g G.\n# TYPE g gauge\ng one\n",
	}
	for name, text := range cases {
		if _, err := Parse(strings.NewReader(text)); err == nil {
			t.Errorf("%s: accepted invalid exposition:\n%s", name, text)
		}
	}
}

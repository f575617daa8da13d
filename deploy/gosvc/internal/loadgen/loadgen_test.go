package loadgen

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"math"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHistQuantilesWithinOnePercent(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for _, n := range []int{1, 7, 1000, 200000} {
		h := NewHist()
		vals := make([]int64, n)
		for i := range vals {
			// Log-normal around 5 ms with a heavy tail, plus some tiny values.
			v := int64(math.Exp(rng.NormFloat64()*1.5) * 5e6)
			if i%97 == 0 {
				v = int64(rng.Intn(300))
			}
			vals[i] = v
			h.Record(v)
		}
		sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
		for _, q := range []float64{0.001, 0.5, 0.9, 0.99, 0.999, 1} {
			rank := int(math.Ceil(q * float64(n)))
			if rank < 1 {
				rank = 1
			}
			exact := float64(vals[rank-1])
			got := float64(h.Quantile(q))
			if math.Abs(got-exact) > 0.01*exact {
				t.Errorf("n=%d q=%v: got %v, exact %v (%.3f%% off)", n, q, got, exact, 100*math.Abs(got-exact)/exact)
			}
		}
		if h.Max() != vals[n-1] || h.Count() != uint64(n) {
			t.Errorf("n=%d: max %d count %d", n, h.Max(), h.Count())
		}
	}
}

func TestHistBucketsCoverRange(t *testing.T) {
	prevHi := int64(-1)
	for i := 0; i < numBuckets; i++ {
		lo, hi := bucketRange(i)
		if lo != prevHi+1 || hi < lo {
			t.Fatalf("bucket %d = [%d,%d] after %d", i, lo, hi, prevHi)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d: bucketOf(%d)=%d bucketOf(%d)=%d", i, lo, bucketOf(lo), hi, bucketOf(hi))
		}
		if lo >= 256 && float64(hi-lo)/2/float64(lo) > 1.0/256 {
			t.Fatalf("bucket %d too wide", i)
		}
		prevHi = hi
	}
	if prevHi != maxValue {
		t.Fatalf("last bucket ends at %d", prevHi)
	}
}

func TestTraceParsing(t *testing.T) {
	text := "# header comment\n\n42\n 7.5 \n0 # idle minute\n# another\n100\n"
	vals, err := ParseTrace(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{42, 7.5, 0, 100}
	if len(vals) != len(want) {
		t.Fatalf("got %v", vals)
	}
	for i := range want {
		if vals[i] != want[i] {
			t.Fatalf("got %v, want %v", vals, want)
		}
	}
	dir := t.TempDir()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(text))
	zw.Close()
	for name, data := range map[string][]byte{"t.txt.gz": gz.Bytes(), "t.txt": []byte(text), "gz-without-suffix": gz.Bytes()} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o644)
		got, err := ReadTrace(p)
		if err != nil || len(got) != 4 || got[3] != 100 {
			t.Errorf("%s: %v %v", name, got, err)
		}
	}
	for _, bad := range []string{"12\nabc\n", "-3\n", "# only comments\n"} {
		if _, err := ParseTrace(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if _, err := ParseTrace(strings.NewReader("1\n2\nx\n")); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("error should name the line: %v", err)
	}
}

func TestSchedules(t *testing.T) {
	r := Ramp{Start: 100, Step: 50, StepSeconds: 2, Steps: RampSteps(100, 50, 300)}
	if r.Steps != 5 || r.Length() != 10 {
		t.Fatalf("ramp %+v length %v", r, r.Length())
	}
	for tm, want := range map[float64]float64{0: 100, 1.99: 100, 2: 150, 9.9: 300, 50: 300} {
		if got := r.RateAt(tm); got != want {
			t.Errorf("ramp at %v: %v, want %v", tm, got, want)
		}
	}
	tr := Trace{Values: []float64{60, 120, 0}, Interval: time.Minute, Scale: 10, TimeScale: 60}
	if tr.Length() != 3 {
		t.Fatalf("trace length %v", tr.Length())
	}
	for tm, want := range map[float64]float64{0.5: 10, 1.5: 20, 2.5: 0, 3.5: 0} {
		if got := tr.RateAt(tm); got != want {
			t.Errorf("trace at %v: %v, want %v", tm, got, want)
		}
	}
}

func run(t *testing.T, cfg Config) Result {
	t.Helper()
	var out bytes.Buffer
	res, err := NewRunner(cfg).Run(context.Background(), &out)
	if err != nil {
		t.Fatal(err)
	}
	// Every output line is a JSON object with the documented keys.
	sc := bufio.NewScanner(&out)
	n := 0
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("bad line %q: %v", sc.Text(), err)
		}
		for _, k := range []string{"t_s", "interval_s", "offered", "offered_qps", "completed", "errors",
			"p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "target_qps"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("line %q lacks %s", sc.Text(), k)
			}
		}
		n++
	}
	if n != len(res.Lines) || !res.Lines[n-1].Summary {
		t.Fatalf("%d lines, result has %d, last %+v", n, len(res.Lines), res.Lines[n-1])
	}
	return res
}

func TestOpenLoopFixedDelay(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
	}))
	defer srv.Close()
	res := run(t, Config{URL: srv.URL, Schedule: Constant{QPS: 200}, Duration: 2 * time.Second, Interval: 500 * time.Millisecond})
	s := res.Summary
	if s.Offered < 390 || s.Offered > 401 || s.Completed != s.Offered || s.Errors != 0 {
		t.Fatalf("summary %+v", s)
	}
	if s.P50 < 19.5 || s.P50 > 26 {
		t.Fatalf("p50 = %v ms, want about 20", s.P50)
	}
	if s.TargetQPS != 200 || math.Abs(s.OfferedQPS-200) > 10 {
		t.Fatalf("target %v offered %v", s.TargetQPS, s.OfferedQPS)
	}
	var offered uint64
	for _, l := range res.Lines[:len(res.Lines)-1] {
		offered += l.Offered
	}
	if offered != s.Offered || len(res.Lines) < 4 {
		t.Fatalf("intervals sum to %d offered over %d lines, summary %d", offered, len(res.Lines), s.Offered)
	}
}

// A server that stops answering for 500 ms: every request whose send time fell
// in the stall must be recorded with the time it waited, not just the one
// request that was on the wire when the stall began.
func TestServerStallIsNotOmitted(t *testing.T) {
	var gate sync.RWMutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gate.RLock()
		gate.RUnlock()
	}))
	defer srv.Close()
	go func() {
		time.Sleep(500 * time.Millisecond)
		gate.Lock()
		time.Sleep(500 * time.Millisecond)
		gate.Unlock()
	}()
	res := run(t, Config{URL: srv.URL, Schedule: Constant{QPS: 200}, Duration: 2 * time.Second})
	checkStall(t, res)
}

// The same from the client side: the scheduler itself is frozen for 500 ms
// (as by a GC pause or a descheduled process). Requests it should have sent
// meanwhile go out late, and their latency must include the lateness.
func TestSchedulerStallIsNotOmitted(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	res := run(t, Config{URL: srv.URL, Schedule: Constant{QPS: 200}, Duration: 2 * time.Second,
		beforeDispatch: func(seq uint64) {
			if seq == 100 { // at t = 0.5 s
				time.Sleep(500 * time.Millisecond)
			}
		}})
	checkStall(t, res)
}

func checkStall(t *testing.T, res Result) {
	t.Helper()
	s := res.Summary
	if s.Offered < 390 || s.Errors != 0 {
		t.Fatalf("summary %+v", s)
	}
	// ~100 requests were due during the stall, waiting 0..500 ms: about 80 of
	// them over 100 ms. A coordinated-omission-prone measurement sees ~1.
	over := res.Total.CountAbove(int64(100 * time.Millisecond))
	if over < 60 || over > 100 {
		t.Fatalf("%d requests over 100 ms, want about 80 (summary %+v)", over, s)
	}
	if s.Max < 400 || s.P90 < 100 {
		t.Fatalf("max %v ms, p90 %v ms: the stall is not visible", s.Max, s.P90)
	}
}

func TestTimeoutsAndDropsAreErrorsWithTimeoutLatency(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	res := run(t, Config{URL: srv.URL, Schedule: Constant{QPS: 100}, Duration: 500 * time.Millisecond,
		Timeout: 300 * time.Millisecond, MaxInflight: 10})
	s := res.Summary
	// 10 admitted at once; each freed slot (at 300 ms) admits another, the rest are dropped.
	if s.Completed != 0 || s.Errors != s.Offered || s.Timeouts < 10 || s.Timeouts > 25 || s.Timeouts+s.Dropped != s.Offered {
		t.Fatalf("summary %+v", s)
	}
	if s.P50 < 300 || s.Max < 300 {
		t.Fatalf("timeouts recorded below the timeout: %+v", s)
	}
}

func TestRateOverrideAndStop(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	r := NewRunner(Config{URL: srv.URL, Schedule: Constant{QPS: 1}, Interval: 400 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(200 * time.Millisecond)
		r.SetRate(300)
		time.Sleep(1000 * time.Millisecond)
		cancel()
	}()
	var out bytes.Buffer
	res, err := r.Run(ctx, &out)
	if err != nil {
		t.Fatal(err)
	}
	s := res.Summary
	// 1 request at 1 qps, then ~300 in the second at 300 qps.
	if s.Offered < 250 || s.Offered > 330 {
		t.Fatalf("offered %d, want ~300 after the override: %+v", s.Offered, s)
	}
	if got := res.Lines[1].TargetQPS; got != 300 {
		t.Fatalf("second interval target %v", got)
	}
}

func TestRampPullsInAfterStep(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	// 0.5 qps for 0.5 s, then 200 qps: without pulling the next send in, the
	// second request would wait until t = 2 s.
	res := run(t, Config{URL: srv.URL, Schedule: Ramp{Start: 0.5, Step: 199.5, StepSeconds: 0.5, Steps: 2}, Interval: 500 * time.Millisecond})
	if s := res.Summary; s.Offered < 90 || s.Offered > 102 {
		t.Fatalf("offered %d, want ~101: %+v", s.Offered, res.Lines)
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseLoadgen([]string{"--url", "http://x/work", "--ramp", "100,50,2", "--max-rate", "300"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if r := o.cfg.Schedule.(Ramp); r.Steps != 5 || o.cfg.Duration != 0 {
		t.Fatalf("%+v duration %v", r, o.cfg.Duration)
	}
	o, _ = parseLoadgen([]string{"--url", "http://x/work"}, &bytes.Buffer{})
	if o.cfg.Duration != 30*time.Second || o.cfg.Schedule.(Constant).QPS != 100 {
		t.Fatalf("defaults %+v", o.cfg)
	}
	p := filepath.Join(t.TempDir(), "tr.txt")
	os.WriteFile(p, []byte("# c\n60\n120\n"), 0o644)
	o, err = parseLoadgen([]string{"--url", "http://x/", "--trace", p, "--trace-scale", "2", "--time-scale", "60"}, &bytes.Buffer{})
	if err != nil || o.cfg.Schedule.Length() != 2 || o.cfg.Schedule.RateAt(1.5) != 4 {
		t.Fatalf("trace %+v %v", o, err)
	}
	for _, bad := range [][]string{
		{}, {"--url", "ftp://x"}, {"--url", "http://x", "--ramp", "1,2"},
		{"--url", "http://x", "--ramp", "1,1,1", "--trace", p}, {"--url", "http://x", "--rate", "5", "--ramp", "1,1,1"},
	} {
		if _, err := parseLoadgen(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestCLIStdinControlAndSummary(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	pr, pw, _ := os.Pipe()
	go func() {
		pw.Write([]byte("rate 100\n"))
		time.Sleep(600 * time.Millisecond)
		pw.Close() // EOF stops the run
	}()
	var stdout, stderr bytes.Buffer
	code := Run([]string{"--url", srv.URL, "--rate", "0", "--duration", "10s", "--interval", "250ms", "--control-stdin"}, pr, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var last Line
	json.Unmarshal([]byte(lines[len(lines)-1]), &last)
	if !last.Summary || last.Offered < 45 || last.Offered > 70 || last.T > 2 {
		t.Fatalf("summary %+v\n%s", last, stdout.String())
	}
}

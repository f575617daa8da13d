// Package loadgen is an open-loop HTTP load generator in the manner of wrk2:
// one scheduler goroutine computes each request's intended send time from the
// target rate and launches it then, whether or not earlier requests have
// returned, and latency is measured from the intended time. A stalled server
// therefore shows up as large latencies for every request that should have
// been sent during the stall (no coordinated omission).
package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/rand"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Config describes one run.
type Config struct {
	URL         string
	Method      string        // default GET
	Schedule    Schedule      // target rate over time
	Duration    time.Duration // 0: the schedule's length, or until stopped
	Interval    time.Duration // reporting interval
	MaxInflight int           // requests over this cap are dropped and count as errors
	Timeout     time.Duration // per request
	Poisson     bool          // exponential inter-arrival gaps instead of uniform
	Seed        int64
	Client      *http.Client // optional; default is a keep-alive client sized by MaxInflight

	// beforeDispatch, when set (tests), runs before each dispatch with the
	// request's sequence number; it may block to simulate a stalled scheduler.
	beforeDispatch func(seq uint64)
}

// Line is one JSON line of output: an interval, or the summary of the run
// (whose interval_s and *_qps cover the sending period, and t_s the end).
// Counts are of events in the interval: offered = requests whose send time
// came (including dropped ones); completed = responses with status < 400;
// errors = timeouts + drops + transport errors + status >= 400. Latency
// percentiles cover completed requests, responses with status >= 400, and
// timeouts and drops (the latter at the timeout value).
type Line struct {
	T            float64 `json:"t_s"`
	Interval     float64 `json:"interval_s"`
	Offered      uint64  `json:"offered"`
	OfferedQPS   float64 `json:"offered_qps"`
	Completed    uint64  `json:"completed"`
	Errors       uint64  `json:"errors"`
	P50          float64 `json:"p50_ms"`
	P90          float64 `json:"p90_ms"`
	P99          float64 `json:"p99_ms"`
	P999         float64 `json:"p999_ms"`
	Max          float64 `json:"max_ms"`
	TargetQPS    float64 `json:"target_qps"`
	CompletedQPS float64 `json:"completed_qps"`
	Mean         float64 `json:"mean_ms"`
	Timeouts     uint64  `json:"timeouts"`
	Dropped      uint64  `json:"dropped"`
	Inflight     int64   `json:"inflight"`
	Summary      bool    `json:"summary,omitempty"`
}

// Result is what Run returns: every line written, and the run's histogram.
type Result struct {
	Lines   []Line
	Summary Line
	Total   *Hist // latencies in ns over the whole run
}

type window struct {
	hist                                          *Hist
	offered, completed, errors, timeouts, dropped uint64
}

func newWindow() *window { return &window{hist: NewHist()} }

func (w *window) reset() {
	w.hist.Reset()
	w.offered, w.completed, w.errors, w.timeouts, w.dropped = 0, 0, 0, 0, 0
}

type override struct {
	t    float64
	rate float64
}

// Runner executes a Config. Create with NewRunner, control with SetRate and
// Abort, and execute with Run.
type Runner struct {
	cfg    Config
	client *http.Client

	mu    sync.Mutex
	cur   *window
	total *window

	ovMu      sync.Mutex
	overrides []override

	start    time.Time
	end      float64 // seconds; sending stops here (guarded by ovMu once running)
	inflight atomic.Int64
	wg       sync.WaitGroup

	reqCtx    context.Context
	abort     context.CancelFunc
	wakeSched chan struct{}
}

// NewRunner validates cfg and fills defaults.
func NewRunner(cfg Config) *Runner {
	if cfg.Method == "" {
		cfg.Method = http.MethodGet
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = 10000
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Schedule == nil {
		cfg.Schedule = Constant{QPS: 100}
	}
	r := &Runner{cfg: cfg, client: cfg.Client, cur: newWindow(), total: newWindow(), wakeSched: make(chan struct{}, 1)}
	if r.client == nil {
		r.client = NewClient(cfg.MaxInflight, cfg.Timeout)
	}
	r.reqCtx, r.abort = context.WithCancel(context.Background())
	return r
}

// NewClient returns a keep-alive client able to hold maxConns idle connections.
func NewClient(maxConns int, timeout time.Duration) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0, // no global limit
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}
}

// SetRate overrides the schedule from now on with a constant rate.
func (r *Runner) SetRate(qps float64) {
	r.ovMu.Lock()
	r.overrides = append(r.overrides, override{t: r.elapsed(), rate: math.Max(0, qps)})
	r.ovMu.Unlock()
	select {
	case r.wakeSched <- struct{}{}:
	default:
	}
}

// Abort cancels requests in flight (a second SIGINT).
func (r *Runner) Abort() { r.abort() }

func (r *Runner) elapsed() float64 {
	if r.start.IsZero() {
		return 0
	}
	return time.Since(r.start).Seconds()
}

// rateAt is the schedule with run-time overrides applied.
func (r *Runner) rateAt(t float64) float64 {
	r.ovMu.Lock()
	defer r.ovMu.Unlock()
	for i := len(r.overrides) - 1; i >= 0; i-- {
		if r.overrides[i].t <= t {
			return r.overrides[i].rate
		}
	}
	return r.cfg.Schedule.RateAt(t)
}

// meanRate is the mean target rate over [from, to]; zero past the end of
// sending (the drain after the schedule is over).
func (r *Runner) meanRate(from, to float64) float64 {
	r.ovMu.Lock()
	end := r.end
	r.ovMu.Unlock()
	at := func(t float64) float64 {
		if t >= end {
			return 0
		}
		return r.rateAt(t)
	}
	if to <= from {
		return at(from)
	}
	const n = 32
	var s float64
	for i := 0; i < n; i++ {
		s += at(from + (to-from)*(float64(i)+0.5)/n)
	}
	return s / n
}

// Run drives load until ctx is cancelled or the duration ends, then waits for
// requests in flight (at most the timeout), writes the last interval and the
// summary to out (one JSON object per line) and returns.
func (r *Runner) Run(ctx context.Context, out io.Writer) (Result, error) {
	var res Result
	enc := json.NewEncoder(out)
	var encErr error
	emit := func(l Line) {
		res.Lines = append(res.Lines, l)
		if err := enc.Encode(l); err != nil && encErr == nil {
			encErr = err
		}
	}

	end := math.Inf(1)
	if r.cfg.Duration > 0 {
		end = r.cfg.Duration.Seconds()
	} else if l := r.cfg.Schedule.Length(); !math.IsInf(l, 1) {
		end = l
	}
	r.end = end
	r.start = time.Now()

	repDone := make(chan struct{})
	repStop := make(chan struct{})
	go func() {
		defer close(repDone)
		t := time.NewTicker(r.cfg.Interval)
		defer t.Stop()
		last := 0.0
		for {
			select {
			case <-t.C:
				now := r.elapsed()
				emit(r.snapshot(last, now))
				last = now
			case <-repStop:
				now := r.elapsed()
				r.mu.Lock()
				empty := r.cur.offered == 0 && r.cur.hist.Count() == 0 && r.cur.errors == 0
				r.mu.Unlock()
				if now-last > 0.001 || !empty {
					emit(r.snapshot(last, now))
				}
				return
			}
		}
	}()

	r.schedule(ctx, end)
	sendPeriod := r.elapsed()
	r.ovMu.Lock()
	r.end = math.Min(r.end, sendPeriod) // a stop ends sending early
	r.ovMu.Unlock()

	// Let requests in flight finish; they are bounded by the timeout.
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(r.cfg.Timeout + time.Second):
		r.abort()
		<-done
	}
	r.abort()
	close(repStop)
	<-repDone

	now := r.elapsed()
	r.mu.Lock()
	s := r.line(r.total, 0, sendPeriod) // rates over the sending period
	res.Total = NewHist()
	res.Total.Merge(r.total.hist)
	r.mu.Unlock()
	s.T, s.Summary = round3(now), true
	s.TargetQPS = round3(r.meanRate(0, sendPeriod))
	res.Summary = s
	emit(s)
	return res, encErr
}

// schedule is the single scheduler loop: it computes intended send times and
// dispatches each request at (or, when behind, immediately after) its time.
func (r *Runner) schedule(ctx context.Context, end float64) {
	const idleStep = 0.01 // re-check a zero rate this often (s)
	const maxSleep = 0.02 // re-check the rate at least this often while waiting (s)
	rng := rand.New(rand.NewSource(r.cfg.Seed))
	gap := func(rate float64) float64 {
		if r.cfg.Poisson {
			return rng.ExpFloat64() / rate
		}
		return 1 / rate
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var seq uint64
	next, last, rUsed := 0.0, math.Inf(-1), 0.0
	for {
		if ctx.Err() != nil {
			return
		}
		now := r.elapsed()
		if next >= end && now >= end {
			return // a send beyond the end may still be pulled in before it
		}
		if next > now {
			// If the rate rose since next was computed (a ramp step, a trace
			// segment, a `rate N` line), pull the next send in.
			if rNow := r.rateAt(now); rNow > rUsed*(1+1e-9) && rNow > 0 {
				rUsed = rNow
				if cand := math.Max(last+gap(rNow), now); cand < next {
					next = cand
					continue
				}
			}
			wait := time.Duration(math.Min(next-now, maxSleep) * float64(time.Second))
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-r.wakeSched:
				timer.Stop()
				select { // drain under either timer-channel semantics
				case <-timer.C:
				default:
				}
			case <-timer.C:
			}
			continue
		}
		rate := r.rateAt(next)
		if rate <= 0 {
			next += idleStep
			rUsed = 0
			continue
		}
		if r.cfg.beforeDispatch != nil {
			r.cfg.beforeDispatch(seq)
		}
		seq++
		r.dispatch(r.start.Add(time.Duration(next * float64(time.Second))))
		last, rUsed = next, rate
		next = last + gap(rate)
	}
}

func (r *Runner) dispatch(intended time.Time) {
	if r.inflight.Load() >= int64(r.cfg.MaxInflight) {
		r.mu.Lock()
		for _, w := range []*window{r.cur, r.total} {
			w.offered++
			w.errors++
			w.dropped++
			w.hist.Record(int64(r.cfg.Timeout))
		}
		r.mu.Unlock()
		return
	}
	r.mu.Lock()
	r.cur.offered++
	r.total.offered++
	r.mu.Unlock()
	r.inflight.Add(1)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.inflight.Add(-1)
		r.do(intended)
	}()
}

type outcome int

const (
	ok outcome = iota
	httpError
	timeout
	transportError
)

func (r *Runner) do(intended time.Time) {
	ctx, cancel := context.WithTimeout(r.reqCtx, r.cfg.Timeout)
	defer cancel()
	res := transportError
	req, err := http.NewRequestWithContext(ctx, r.cfg.Method, r.cfg.URL, nil)
	if err == nil {
		var resp *http.Response
		resp, err = r.client.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil {
				res = ok
				if resp.StatusCode >= 400 {
					res = httpError
				}
			}
		}
	}
	lat := time.Since(intended)
	if err != nil && (errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err)) {
		res = timeout
		lat = max(lat, r.cfg.Timeout)
	}
	r.mu.Lock()
	for _, w := range []*window{r.cur, r.total} {
		switch res {
		case ok:
			w.completed++
		case timeout:
			w.errors++
			w.timeouts++
		default:
			w.errors++
		}
		if res != transportError {
			w.hist.Record(int64(lat))
		}
	}
	r.mu.Unlock()
}

// snapshot turns the current window into a line and starts a new one.
func (r *Runner) snapshot(from, to float64) Line {
	r.mu.Lock()
	l := r.line(r.cur, from, to)
	r.cur.reset()
	r.mu.Unlock()
	l.TargetQPS = round3(r.meanRate(from, to))
	return l
}

func (r *Runner) line(w *window, from, to float64) Line {
	d := to - from
	ms := func(ns int64) float64 { return round3(float64(ns) / 1e6) }
	l := Line{
		T: round3(to), Interval: round3(d),
		Offered: w.offered, Completed: w.completed, Errors: w.errors,
		Timeouts: w.timeouts, Dropped: w.dropped,
		P50: ms(w.hist.Quantile(0.5)), P90: ms(w.hist.Quantile(0.9)), P99: ms(w.hist.Quantile(0.99)),
		P999: ms(w.hist.Quantile(0.999)), Max: ms(w.hist.Max()), Mean: round3(w.hist.Mean() / 1e6),
		Inflight: r.inflight.Load(),
	}
	if d > 0 {
		l.OfferedQPS = round3(float64(w.offered) / d)
		l.CompletedQPS = round3(float64(w.completed) / d)
	}
	return l
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

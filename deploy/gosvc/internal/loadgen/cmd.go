package loadgen

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	cfg          Config
	controlStdin bool
}

func parseRamp(s string) (start, step, stepSec float64, err error) {
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return 0, 0, 0, fmt.Errorf("--ramp %q: want start,step,step-seconds, e.g. 100,100,5", s)
	}
	var v [3]float64
	for i, p := range parts {
		v[i], err = strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(p), "s")), 64)
		if err != nil || math.IsNaN(v[i]) || math.IsInf(v[i], 0) {
			return 0, 0, 0, fmt.Errorf("--ramp %q: %q is not a number", s, p)
		}
	}
	if v[0] < 0 || v[2] <= 0 {
		return 0, 0, 0, fmt.Errorf("--ramp %q: start must be >= 0 and step-seconds > 0", s)
	}
	return v[0], v[1], v[2], nil
}

func parseLoadgen(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	c := &o.cfg
	fs := flag.NewFlagSet("gosvc loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.URL, "url", "", "target URL (required), e.g. http://127.0.0.1:8080/work")
	fs.StringVar(&c.Method, "method", "GET", "HTTP method")
	rate := fs.Float64("rate", 100, "constant target rate in requests/s")
	duration := fs.Duration("duration", 30*time.Second, "run length (0: the ramp/trace length, or until SIGTERM/'stop'); --ramp with --steps/--max-rate and --trace default to their own length")
	ramp := fs.String("ramp", "", "stepped ramp start,step,step-seconds (requests/s, requests/s, s), e.g. 100,100,5")
	maxRate := fs.Float64("max-rate", 0, "last ramp step is the highest rate <= this")
	steps := fs.Int("steps", 0, "number of ramp steps")
	trace := fs.String("trace", "", "trace file: one number of requests per --trace-interval per line, '#' comments, gzip if .gz")
	traceInterval := fs.Duration("trace-interval", time.Minute, "the interval one trace value covers")
	traceScale := fs.Float64("trace-scale", 1, "multiply trace values (map the trace onto the service's capacity)")
	timeScale := fs.Float64("time-scale", 1, "replay speed-up: a trace value lasts trace-interval/time-scale at its per-second rate")
	traceOffset := fs.Int("trace-offset", 0, "skip this many trace values")
	fs.DurationVar(&c.Interval, "interval", time.Second, "reporting interval of the JSON lines")
	fs.IntVar(&c.MaxInflight, "max-inflight", 10000, "cap on requests in flight; requests over it are dropped (errors, latency = timeout)")
	fs.DurationVar(&c.Timeout, "timeout", 2*time.Second, "per-request timeout; a timed-out request is an error with latency >= timeout")
	fs.BoolVar(&c.Poisson, "poisson", false, "exponential inter-arrival times (Poisson arrivals) instead of uniform spacing")
	fs.Int64Var(&c.Seed, "seed", 1, "random seed for --poisson")
	fs.BoolVar(&o.controlStdin, "control-stdin", false, "read 'rate N' and 'stop' lines from stdin; EOF stops the run")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	if c.URL == "" {
		return nil, errors.New("--url is required, e.g. --url http://127.0.0.1:8080/work")
	}
	if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url %q: want an http:// or https:// URL", c.URL)
	}
	if c.Interval <= 0 || c.Timeout <= 0 || c.MaxInflight <= 0 || *duration < 0 {
		return nil, errors.New("--interval, --timeout and --max-inflight must be > 0, --duration >= 0")
	}
	if *ramp != "" && *trace != "" {
		return nil, errors.New("--ramp and --trace are exclusive: pick one schedule")
	}
	if set["rate"] && (*ramp != "" || *trace != "") {
		return nil, errors.New("--rate sets a constant rate: drop it when using --ramp or --trace")
	}
	switch {
	case *ramp != "":
		start, step, stepSec, err := parseRamp(*ramp)
		if err != nil {
			return nil, err
		}
		r := Ramp{Start: start, Step: step, StepSeconds: stepSec, Steps: *steps}
		if *maxRate > 0 {
			if *maxRate < start {
				return nil, fmt.Errorf("--max-rate %g is below the ramp start %g", *maxRate, start)
			}
			n := RampSteps(start, step, *maxRate)
			if r.Steps == 0 || n < r.Steps {
				r.Steps = n
			}
		}
		c.Schedule = r
	case *trace != "":
		vals, err := ReadTrace(*trace)
		if err != nil {
			return nil, fmt.Errorf("--trace: %v", err)
		}
		if *traceOffset < 0 || *traceOffset >= len(vals) {
			return nil, fmt.Errorf("--trace-offset %d: the trace has %d values", *traceOffset, len(vals))
		}
		if *traceInterval <= 0 || *traceScale < 0 || *timeScale <= 0 {
			return nil, errors.New("--trace-interval and --time-scale must be > 0, --trace-scale >= 0")
		}
		c.Schedule = Trace{Values: vals[*traceOffset:], Interval: *traceInterval, Scale: *traceScale, TimeScale: *timeScale}
	default:
		if *rate < 0 {
			return nil, fmt.Errorf("--rate %g: must be >= 0", *rate)
		}
		c.Schedule = Constant{QPS: *rate}
	}
	bounded := !math.IsInf(c.Schedule.Length(), 1)
	switch {
	case set["duration"]:
		c.Duration = *duration
	case bounded:
		c.Duration = 0 // the schedule's own length
	default:
		c.Duration = *duration
	}
	return o, nil
}

// Run runs `gosvc loadgen` and returns the process exit code.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	o, err := parseLoadgen(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "gosvc loadgen: %v\n", err)
		return 2
	}
	logger := log.New(stderr, "loadgen: ", log.LstdFlags)
	r := NewRunner(o.cfg)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigc)
	go func() {
		n := 0
		for sig := range sigc {
			n++
			if n == 1 {
				logger.Printf("%v: stopping; waiting for requests in flight (again to abort them)", sig)
				stop()
			} else {
				r.Abort()
			}
		}
	}()
	if o.controlStdin {
		go controlLoop(stdin, r, stop, logger)
	}
	dur := "schedule length"
	if o.cfg.Duration > 0 {
		dur = o.cfg.Duration.String()
	} else if math.IsInf(o.cfg.Schedule.Length(), 1) {
		dur = "until stopped"
	}
	logger.Printf("%s against %s, %s", o.cfg.Schedule, o.cfg.URL, dur)
	w := bufio.NewWriter(stdout)
	res, err := r.Run(ctx, lineFlusher{w})
	w.Flush()
	if err != nil {
		fmt.Fprintf(stderr, "gosvc loadgen: writing output: %v\n", err)
		return 1
	}
	s := res.Summary
	logger.Printf("done: offered %d, completed %d, errors %d, p50 %.2f ms, p99 %.2f ms", s.Offered, s.Completed, s.Errors, s.P50, s.P99)
	return 0
}

// lineFlusher flushes after every JSON line so a reader sees intervals live.
type lineFlusher struct{ w *bufio.Writer }

func (l lineFlusher) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	if err == nil {
		err = l.w.Flush()
	}
	return n, err
}

// controlLoop applies stdin commands: "rate N" changes the rate, "stop" (or
// EOF, when the controlling process closes the pipe) ends the run.
func controlLoop(stdin io.Reader, r *Runner, stop func(), logger *log.Logger) {
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 0:
		case len(f) == 2 && f[0] == "rate":
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil || v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
				logger.Printf("stdin: bad rate %q (want rate N with N >= 0)", f[1])
				continue
			}
			r.SetRate(v)
		case len(f) == 1 && (f[0] == "stop" || f[0] == "quit"):
			stop()
			return
		default:
			logger.Printf("stdin: unknown command %q (want 'rate N' or 'stop')", sc.Text())
		}
	}
	stop()
}

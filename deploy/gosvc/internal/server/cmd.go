package server

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ParseBytes accepts a byte count with an optional KiB/MiB/GiB/TiB (or K/M/G/T)
// suffix, e.g. "512MiB"; "0" means unlimited where a limit is meant.
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suf) {
			t, mult = strings.TrimSuffix(t, u.suf), u.m
			break
		}
	}
	v, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || v < 0 || v > (1<<63-1)/mult {
		return 0, fmt.Errorf("invalid byte size %q: want e.g. 536870912, 512MiB or 0", s)
	}
	return v * mult, nil
}

// DefaultAdminAddr is where the admin API and pprof listen unless --admin-addr says otherwise:
// loopback, a free port (the startup line's admin_addr names it).
const DefaultAdminAddr = "127.0.0.1:0"

// IsLoopback reports whether a listen address binds only to loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

type serveOptions struct {
	addr, adminAddr  string
	adminAllowRemote bool
	adminTokenFile   string
	shutdownTimeout  time.Duration
	cfg              Config
}

func parseServe(args []string, stderr io.Writer) (*serveOptions, error) {
	o := &serveOptions{}
	fs := flag.NewFlagSet("gosvc serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "listen address of /work, /healthz and /metrics (port 0 picks a free port)")
	fs.StringVar(&o.adminAddr, "admin-addr", DefaultAdminAddr, "listen address of the admin API (/admin/knobs) and /debug/pprof/, both behind the bearer token; "+
		"never shared with --addr (port 0 picks a free port: read admin_addr from the startup line)")
	fs.BoolVar(&o.adminAllowRemote, "admin-allow-remote", false, "allow the admin API on a non-loopback address")
	fs.StringVar(&o.adminTokenFile, "admin-token-file", "", "file holding the admin bearer token, at least 16 bytes (default: env GOSVC_ADMIN_TOKEN; "+
		"neither disables /admin/knobs and /debug/pprof/)")
	fs.Int64Var(&o.cfg.Work.CPUUs, "cpu-us", 100, "microseconds of CPU computation per /work request (calibrated at start)")
	fs.Int64Var(&o.cfg.Work.CPUIters, "cpu-iters", 0, "explicit spin iterations per request; overrides --cpu-us when > 0")
	fs.Float64Var(&o.cfg.ItersPerUs, "iters-per-us", 0, "Spin iterations per microsecond that convert --cpu-us and --mutex-us; 0 calibrates at start "+
		"(fix it to make the work per request identical across restarts)")
	fs.Int64Var(&o.cfg.Work.MutexUs, "mutex-us", 0, "microseconds of CPU computation per request while holding one global sync.Mutex")
	fs.Int64Var(&o.cfg.Work.AllocBytes, "alloc-bytes", 16384, "size of each buffer a request takes from the object pool")
	fs.Int64Var(&o.cfg.Work.AllocCount, "alloc-count", 1, "buffers per request")
	fs.StringVar(&o.cfg.Downstream, "downstream", "", "URL of another gosvc called once per /work request")
	fs.DurationVar(&o.cfg.DownstreamTimeout, "downstream-timeout", 2*time.Second, "timeout of a downstream call")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "grace period for in-flight requests on SIGTERM/SIGINT")
	gomaxprocs := fs.Int64("gomaxprocs", 0, "initial GOMAXPROCS (1..1024); 0 keeps the runtime default")
	gogc := fs.String("gogc", "", "initial GOGC: 1..100000, or -1/off; unset keeps the GOGC environment variable (else 100)")
	gomemlimit := fs.String("gomemlimit", "", "initial GOMEMLIMIT, bytes or with KiB/MiB/GiB suffix, 0 unlimited; unset keeps the environment")
	poolSize := fs.Int64("pool-size", DefaultPoolSize, "initial object-pool size (max pooled buffers, 0..1000000)")
	connPool := fs.Int64("conn-pool", DefaultConnPool, "initial connection-pool size (MaxConnsPerHost to --downstream, 1..10000)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	p := &o.cfg.Initial
	if *gomaxprocs != 0 {
		p.GOMAXPROCS = gomaxprocs
	}
	if set["gogc"] {
		v, err := strconv.ParseInt(strings.TrimSpace(*gogc), 10, 64)
		if strings.EqualFold(strings.TrimSpace(*gogc), "off") {
			v, err = -1, nil
		}
		if err != nil {
			return nil, fmt.Errorf("--gogc %q: want an integer 1..100000, or -1/off", *gogc)
		}
		p.GOGC = &v
	}
	if set["gomemlimit"] {
		v, err := ParseBytes(*gomemlimit)
		if err != nil {
			return nil, fmt.Errorf("--gomemlimit: %v", err)
		}
		p.GOMEMLIMITBytes = &v
	}
	p.ObjectPoolSize, p.ConnPoolSize = poolSize, connPool
	if err := p.Validate(); err != nil {
		var re *RangeError
		if errors.As(err, &re) {
			return nil, fmt.Errorf("initial knob %v", err)
		}
		return nil, err
	}
	if r := o.cfg.ItersPerUs; !(r >= 0) || math.IsInf(r, 0) {
		return nil, fmt.Errorf("--iters-per-us=%v: want a positive number of Spin iterations per microsecond, or 0 to calibrate at start", r)
	}
	for name, v := range map[string]int64{"cpu-us": o.cfg.Work.CPUUs, "cpu-iters": o.cfg.Work.CPUIters, "mutex-us": o.cfg.Work.MutexUs,
		"alloc-bytes": o.cfg.Work.AllocBytes, "alloc-count": o.cfg.Work.AllocCount} {
		if v < 0 {
			return nil, fmt.Errorf("--%s=%d: must be >= 0", name, v)
		}
	}

	switch {
	case o.adminTokenFile != "":
		b, err := os.ReadFile(o.adminTokenFile)
		if err != nil {
			return nil, fmt.Errorf("--admin-token-file: %v", err)
		}
		o.cfg.AdminToken = strings.TrimSpace(string(b))
		if o.cfg.AdminToken == "" {
			return nil, fmt.Errorf("--admin-token-file %s is empty: write at least %d random bytes into it, e.g. openssl rand -hex 32 > %s",
				o.adminTokenFile, MinTokenBytes, o.adminTokenFile)
		}
		if err := CheckToken(o.cfg.AdminToken); err != nil {
			return nil, fmt.Errorf("--admin-token-file %s: %v: write at least %d random bytes into it, e.g. openssl rand -hex 32 > %s",
				o.adminTokenFile, err, MinTokenBytes, o.adminTokenFile)
		}
	default:
		o.cfg.AdminToken = strings.TrimSpace(os.Getenv("GOSVC_ADMIN_TOKEN"))
		if err := CheckToken(o.cfg.AdminToken); err != nil {
			return nil, fmt.Errorf("GOSVC_ADMIN_TOKEN: %v: set it to at least %d random bytes, e.g. GOSVC_ADMIN_TOKEN=$(openssl rand -hex 32), "+
				"or use --admin-token-file", err, MinTokenBytes)
		}
	}
	if strings.TrimSpace(o.adminAddr) == "" {
		return nil, fmt.Errorf("--admin-addr is empty: the admin API and /debug/pprof/ need their own listener, "+
			"e.g. --admin-addr %s (the default; port 0 picks a free port)", DefaultAdminAddr)
	}
	if !o.adminAllowRemote && !IsLoopback(o.adminAddr) {
		return nil, fmt.Errorf("refusing to serve the admin API on non-loopback address %q: use --admin-addr 127.0.0.1:PORT or pass --admin-allow-remote", o.adminAddr)
	}
	return o, nil
}

// RunServe runs `gosvc serve` and returns the process exit code.
func RunServe(args []string, stdout, stderr io.Writer) int {
	o, err := parseServe(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "gosvc serve: %v\n", err)
		return 2
	}
	logger := log.New(stderr, "gosvc: ", log.LstdFlags|log.Lmicroseconds)
	s, err := New(o.cfg)
	if err != nil {
		fmt.Fprintf(stderr, "gosvc serve: %v\n", err)
		return 2
	}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		fmt.Fprintf(stderr, "gosvc serve: listen %s: %v\n", o.addr, err)
		return 1
	}
	aln, err := net.Listen("tcp", o.adminAddr)
	if err != nil {
		ln.Close()
		fmt.Fprintf(stderr, "gosvc serve: listen %s (admin): %v\n", o.adminAddr, err)
		return 1
	}
	servers := []*http.Server{newHTTPServer(s.Handler(), logger), newHTTPServer(s.AdminHandler(), logger)}
	listeners := []net.Listener{ln, aln}
	adminAddr := aln.Addr().String()
	// One JSON line on stdout tells a supervisor which ports were bound (port 0).
	json.NewEncoder(stdout).Encode(map[string]any{"event": "listening", "addr": ln.Addr().String(),
		"admin_addr": adminAddr, "admin_enabled": o.cfg.AdminToken != "", "knobs": s.Knobs(),
		"cpu_iters_per_us": s.itersPerUs})
	logger.Printf("serving on %s (admin %s, enabled=%v)", ln.Addr(), adminAddr, o.cfg.AdminToken != "")

	errc := make(chan error, len(servers))
	for i := range servers {
		go func(srv *http.Server, l net.Listener) { errc <- srv.Serve(l) }(servers[i], listeners[i])
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigc)
	code := 0
	select {
	case sig := <-sigc:
		logger.Printf("%v: shutting down (grace %s)", sig, o.shutdownTimeout)
	case err := <-errc:
		logger.Printf("server stopped: %v", err)
		code = 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(ctx); err != nil {
			logger.Printf("shutdown: %v", err)
			srv.Close()
		}
	}
	return code
}

func newHTTPServer(h http.Handler, logger *log.Logger) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second, ErrorLog: logger}
}

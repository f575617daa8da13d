package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type options struct {
	listen, admin    string
	upstreams        []string
	adminAllowRemote bool
	shutdownTimeout  time.Duration
	cfg              Config
}

func isLoopback(addr string) bool {
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

func parse(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("gosvc proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8090", "listen address of the proxied traffic (port 0 picks a free port)")
	upstream := fs.String("upstream", "", "comma-separated upstream URLs balanced round-robin, e.g. http://127.0.0.1:8080 (may be empty; set later through the admin API)")
	fs.StringVar(&o.admin, "admin", "127.0.0.1:0", "listen address of the admin API (loopback only unless --admin-allow-remote)")
	fs.BoolVar(&o.adminAllowRemote, "admin-allow-remote", false, "allow the admin API on a non-loopback address")
	fs.StringVar(&o.cfg.HealthPath, "health-path", "/healthz", "path probed on every upstream")
	fs.DurationVar(&o.cfg.HealthInterval, "health-interval", time.Second, "interval of active health checks (0 disables them)")
	fs.DurationVar(&o.cfg.HealthTimeout, "health-timeout", 500*time.Millisecond, "timeout of one health check")
	fs.IntVar(&o.cfg.HealthFails, "health-fails", 2, "consecutive failed checks that take an upstream out of rotation")
	fs.DurationVar(&o.cfg.UpstreamTimeout, "upstream-timeout", 10*time.Second, "time to an upstream's response headers before 502")
	fs.DurationVar(&o.cfg.DialTimeout, "dial-timeout", time.Second, "timeout of a connection to an upstream")
	fs.DurationVar(&o.cfg.Hold, "hold", 60*time.Second, "longest a dropped or blackholed request is held open before its connection is reset")
	fs.Int64Var(&o.cfg.Seed, "seed", 1, "seed of the fault draws (delay jitter, loss, partition)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 5*time.Second, "grace period for in-flight requests on SIGTERM/SIGINT")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, raw := range strings.Split(*upstream, ",") {
		if strings.TrimSpace(raw) == "" {
			continue
		}
		if _, err := ParseUpstream(raw); err != nil {
			return nil, fmt.Errorf("--upstream %q: want http(s)://host:port URLs, comma-separated", raw)
		}
		o.upstreams = append(o.upstreams, strings.TrimSpace(raw))
	}
	if o.cfg.HealthFails < 1 {
		return nil, fmt.Errorf("--health-fails=%d: must be >= 1", o.cfg.HealthFails)
	}
	if !o.adminAllowRemote && !isLoopback(o.admin) {
		return nil, fmt.Errorf("refusing to serve the admin API on non-loopback address %q: use --admin 127.0.0.1:PORT or pass --admin-allow-remote", o.admin)
	}
	return o, nil
}

// Run runs `gosvc proxy` and returns the process exit code.
func Run(args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "gosvc proxy: %v\n", err)
		return 2
	}
	logger := log.New(stderr, "gosvc proxy: ", log.LstdFlags|log.Lmicroseconds)
	p, err := New(o.cfg, o.upstreams)
	if err != nil {
		fmt.Fprintf(stderr, "gosvc proxy: %v\n", err)
		return 2
	}
	defer p.Close()
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		fmt.Fprintf(stderr, "gosvc proxy: listen %s: %v\n", o.listen, err)
		return 1
	}
	aln, err := net.Listen("tcp", o.admin)
	if err != nil {
		ln.Close()
		fmt.Fprintf(stderr, "gosvc proxy: listen %s (admin): %v\n", o.admin, err)
		return 1
	}
	servers := []*http.Server{
		{Handler: p.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second, ErrorLog: logger},
		{Handler: p.AdminHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: logger},
	}
	listeners := []net.Listener{ln, aln}
	// One JSON line on stdout tells a supervisor which ports were bound (port 0).
	json.NewEncoder(stdout).Encode(map[string]any{"event": "listening", "addr": ln.Addr().String(),
		"admin_addr": aln.Addr().String(), "upstreams": o.upstreams})
	logger.Printf("proxying %s -> %v (admin %s)", ln.Addr(), o.upstreams, aln.Addr())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.RunHealthChecks(ctx)
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
		logger.Printf("%v: shutting down", sig)
	case err := <-errc:
		logger.Printf("server stopped: %v", err)
		code = 1
	}
	p.Close() // release held connections first: Shutdown does not wait for hijacked ones
	sctx, scancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer scancel()
	for _, srv := range servers {
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	}
	return code
}

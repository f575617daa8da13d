// Package proxy is gosvc's fault proxy: an HTTP reverse proxy that balances
// requests round-robin across upstream replicas and injects network faults
// (delay with jitter, loss as dropped or reset connections, partition as
// blackholed or refused requests, a bandwidth limit). Faults and upstreams
// change at run time through a small JSON admin API on a separate listener.
//
// It works at the request level because the machines it runs on have no
// sch_netem: a request is the unit that is delayed, lost or cut off, and a
// loss or partition is made visible to the client the way the network would
// make it visible — a connection that never answers, or one that is reset.
package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Proxy.
type Config struct {
	HealthPath      string        // GET on every upstream; 2xx = healthy
	HealthInterval  time.Duration // 0 disables active health checks
	HealthTimeout   time.Duration // per check
	HealthFails     int           // consecutive failed checks that take an upstream out of rotation
	UpstreamTimeout time.Duration // time to the upstream's response headers
	DialTimeout     time.Duration
	Hold            time.Duration // longest a dropped or blackholed request is held open
	Seed            int64         // seeds the fault draws
}

func (c *Config) defaults() {
	if c.HealthPath == "" {
		c.HealthPath = "/healthz"
	}
	if c.HealthTimeout <= 0 {
		c.HealthTimeout = 500 * time.Millisecond
	}
	if c.HealthFails <= 0 {
		c.HealthFails = 2
	}
	if c.UpstreamTimeout <= 0 {
		c.UpstreamTimeout = 10 * time.Second
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = time.Second
	}
	if c.Hold <= 0 {
		c.Hold = 60 * time.Second
	}
}

type upstream struct {
	raw      string
	url      *url.URL
	healthy  atomic.Bool
	fails    atomic.Int64
	requests atomic.Int64
	errors   atomic.Int64
}

// UpstreamStatus is one upstream in the admin API.
type UpstreamStatus struct {
	URL                 string `json:"url"`
	Healthy             bool   `json:"healthy"`
	Requests            int64  `json:"requests"`
	Errors              int64  `json:"errors"`
	ConsecutiveFailures int64  `json:"consecutive_failures"`
}

// Stats are the proxy's counters since start.
type Stats struct {
	Requests         int64            `json:"requests"`
	Proxied          int64            `json:"proxied"`
	NoUpstream       int64            `json:"no_upstream"`
	UpstreamErrors   int64            `json:"upstream_errors"`
	Delayed          int64            `json:"delayed"`
	Lost             int64            `json:"lost"`
	Partitioned      int64            `json:"partitioned"`
	BandwidthDropped int64            `json:"bandwidth_dropped"`
	Held             int64            `json:"held"`
	Upstreams        []UpstreamStatus `json:"upstreams"`
}

type ctxKey struct{}

// Proxy is the balancer and fault injector. Create it with New; serve
// Handler() and AdminHandler(); Close releases held connections.
type Proxy struct {
	cfg Config

	upMu sync.RWMutex
	ups  []*upstream
	rr   atomic.Uint64

	faultMu sync.Mutex // serialises fault updates
	faults  atomic.Pointer[FaultSet]
	bucket  atomic.Pointer[bucket]
	delayR  *corrRand
	lossR   *corrRand
	cutR    *corrRand

	rp *httputil.ReverseProxy

	holdCtx    context.Context
	cancelHold context.CancelFunc

	requests, proxied, noUpstream, upstreamErrors atomic.Int64
	delayed, lost, partitioned, bwDropped, held   atomic.Int64
}

// New builds a proxy over the given upstream URLs (may be empty).
func New(cfg Config, upstreams []string) (*Proxy, error) {
	cfg.defaults()
	p := &Proxy{cfg: cfg, delayR: newCorrRand(cfg.Seed), lossR: newCorrRand(cfg.Seed + 1), cutR: newCorrRand(cfg.Seed + 2)}
	p.faults.Store(&FaultSet{})
	p.holdCtx, p.cancelHold = context.WithCancel(context.Background())
	if err := p.SetUpstreams(upstreams); err != nil {
		return nil, err
	}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.UpstreamTimeout,
		DisableCompression:    true,
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			up := pr.In.Context().Value(ctxKey{}).(*upstream)
			pr.SetURL(up.url)
			pr.Out.Host = pr.In.Host
		},
		Transport: transport,
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode >= 500 {
				if up, ok := resp.Request.Context().Value(ctxKey{}).(*upstream); ok {
					up.errors.Add(1)
				}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			up, _ := r.Context().Value(ctxKey{}).(*upstream)
			p.upstreamErrors.Add(1)
			if up != nil {
				up.errors.Add(1)
			}
			if r.Context().Err() != nil {
				return // the client went away; nobody to answer
			}
			where := ""
			if up != nil {
				where = up.raw
			}
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error(), "upstream": where})
		},
	}
	return p, nil
}

// Close releases every held (dropped or blackholed) connection.
func (p *Proxy) Close() { p.cancelHold() }

// ------------------------------------------------------------------ upstreams

// ParseUpstream checks one upstream URL.
func ParseUpstream(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &FieldError{Field: "upstreams", Value: raw, Allowed: "http(s)://host:port URLs"}
	}
	return u, nil
}

// SetUpstreams replaces the upstream set. Upstreams present before keep their
// health and counters; new ones start healthy.
func (p *Proxy) SetUpstreams(raws []string) error {
	parsed := make([]*upstream, 0, len(raws))
	seen := map[string]bool{}
	for _, raw := range raws {
		u, err := ParseUpstream(raw)
		if err != nil {
			return err
		}
		key := u.String()
		if seen[key] {
			continue
		}
		seen[key] = true
		parsed = append(parsed, &upstream{raw: key, url: u})
	}
	p.upMu.Lock()
	defer p.upMu.Unlock()
	old := map[string]*upstream{}
	for _, up := range p.ups {
		old[up.raw] = up
	}
	for i, up := range parsed {
		if prev, ok := old[up.raw]; ok {
			parsed[i] = prev
		} else {
			up.healthy.Store(true)
		}
	}
	p.ups = parsed
	return nil
}

// AddUpstream adds one upstream (no-op when present).
func (p *Proxy) AddUpstream(raw string) error {
	raws := p.upstreamURLs()
	return p.SetUpstreams(append(raws, raw))
}

// RemoveUpstream removes one upstream; false when it was not there.
func (p *Proxy) RemoveUpstream(raw string) (bool, error) {
	u, err := ParseUpstream(raw)
	if err != nil {
		return false, err
	}
	raws := p.upstreamURLs()
	keep := raws[:0]
	found := false
	for _, r := range raws {
		if r == u.String() {
			found = true
			continue
		}
		keep = append(keep, r)
	}
	return found, p.SetUpstreams(keep)
}

func (p *Proxy) upstreamURLs() []string {
	p.upMu.RLock()
	defer p.upMu.RUnlock()
	out := make([]string, len(p.ups))
	for i, up := range p.ups {
		out[i] = up.raw
	}
	return out
}

// Upstreams reports every upstream's state.
func (p *Proxy) Upstreams() []UpstreamStatus {
	p.upMu.RLock()
	defer p.upMu.RUnlock()
	out := make([]UpstreamStatus, len(p.ups))
	for i, up := range p.ups {
		out[i] = UpstreamStatus{URL: up.raw, Healthy: up.healthy.Load(), Requests: up.requests.Load(),
			Errors: up.errors.Load(), ConsecutiveFailures: up.fails.Load()}
	}
	return out
}

// pick returns the next healthy upstream in round-robin order, or nil.
func (p *Proxy) pick() *upstream {
	p.upMu.RLock()
	defer p.upMu.RUnlock()
	n := len(p.ups)
	for i := 0; i < n; i++ {
		up := p.ups[int(p.rr.Add(1)%uint64(n))]
		if up.healthy.Load() {
			return up
		}
	}
	return nil
}

// RunHealthChecks probes every upstream each HealthInterval until ctx ends.
func (p *Proxy) RunHealthChecks(ctx context.Context) {
	if p.cfg.HealthInterval <= 0 {
		return
	}
	client := &http.Client{Timeout: p.cfg.HealthTimeout, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	tick := time.NewTicker(p.cfg.HealthInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			p.checkAll(ctx, client)
		}
	}
}

func (p *Proxy) checkAll(ctx context.Context, client *http.Client) {
	p.upMu.RLock()
	ups := append([]*upstream(nil), p.ups...)
	p.upMu.RUnlock()
	var wg sync.WaitGroup
	for _, up := range ups {
		wg.Add(1)
		go func(up *upstream) {
			defer wg.Done()
			if p.probe(ctx, client, up) {
				up.fails.Store(0)
				up.healthy.Store(true)
			} else if up.fails.Add(1) >= int64(p.cfg.HealthFails) {
				up.healthy.Store(false)
			}
		}(up)
	}
	wg.Wait()
}

func (p *Proxy) probe(ctx context.Context, client *http.Client, up *upstream) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(up.raw, "/")+p.cfg.HealthPath, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 300
}

// ------------------------------------------------------------------ faults

// Faults returns the active faults.
func (p *Proxy) Faults() FaultSet { return *p.faults.Load() }

// SetFault validates and activates one fault kind from its JSON parameters.
// Omitted parameters take their defaults: correlation 0, loss mode "drop",
// partition fraction 1 and mode "blackhole", bandwidth burst 10000 bytes.
func (p *Proxy) SetFault(kind string, body io.Reader) (FaultSet, error) {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	p.faultMu.Lock()
	defer p.faultMu.Unlock()
	next := *p.faults.Load()
	var err error
	switch kind {
	case "delay":
		d := &Delay{}
		if err = decodeInto(dec, d); err == nil {
			err = d.Validate()
		}
		next.Delay = d
	case "loss":
		l := &Loss{Mode: "drop"}
		if err = decodeInto(dec, l); err == nil {
			err = l.Validate()
		}
		next.Loss = l
	case "partition":
		pt := &Partition{Fraction: 1, Mode: "blackhole"}
		if err = decodeInto(dec, pt); err == nil {
			err = pt.Validate()
		}
		next.Partition = pt
	case "bandwidth":
		b := &Bandwidth{BurstBytes: 10000}
		if err = decodeInto(dec, b); err == nil {
			err = b.Validate()
		}
		next.Bandwidth = b
		if err == nil {
			p.bucket.Store(newBucket(*b, time.Now()))
		}
	default:
		return next, errUnknownKind(kind)
	}
	if err != nil {
		return *p.faults.Load(), err
	}
	p.faults.Store(&next)
	return next, nil
}

// ClearFault turns one fault kind off ("" clears all).
func (p *Proxy) ClearFault(kind string) (FaultSet, error) {
	p.faultMu.Lock()
	defer p.faultMu.Unlock()
	next := *p.faults.Load()
	switch kind {
	case "":
		next = FaultSet{}
	case "delay":
		next.Delay = nil
	case "loss":
		next.Loss = nil
	case "partition":
		next.Partition = nil
	case "bandwidth":
		next.Bandwidth = nil
	default:
		return next, errUnknownKind(kind)
	}
	p.faults.Store(&next)
	return next, nil
}

type unknownKindError string

func (e unknownKindError) Error() string {
	return fmt.Sprintf("unknown fault kind %q: use one of %s", string(e), strings.Join(FaultKinds, ", "))
}

func errUnknownKind(kind string) error { return unknownKindError(kind) }

func decodeInto(dec *json.Decoder, v any) error {
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("invalid JSON body: %v", err)
	}
	return nil
}

// ------------------------------------------------------------------ serving

// Handler serves proxied traffic.
func (p *Proxy) Handler() http.Handler { return http.HandlerFunc(p.serve) }

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	f := p.faults.Load()
	if f.Partition != nil && f.Partition.Fraction > 0 && p.cutR.next(0) < f.Partition.Fraction {
		p.partitioned.Add(1)
		p.cut(w, r, f.Partition.Mode == "refuse")
		return
	}
	if f.Loss != nil && f.Loss.Percent > 0 && p.lossR.next(f.Loss.Correlation)*100 < f.Loss.Percent {
		p.lost.Add(1)
		p.cut(w, r, f.Loss.Mode == "reset")
		return
	}
	if f.Delay != nil {
		if d := f.Delay.delayFor(p.delayR); d > 0 {
			p.delayed.Add(1)
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
	}
	up := p.pick()
	if up == nil {
		p.noUpstream.Add(1)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no healthy upstream"})
		return
	}
	up.requests.Add(1)
	p.proxied.Add(1)
	if f.Bandwidth != nil {
		if b := p.bucket.Load(); b != nil {
			w = &shapedWriter{ResponseWriter: w, p: p, b: b, ctx: r.Context()}
		}
	}
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, up)))
}

// cut makes a request disappear: reset closes the client connection with an
// RST at once; otherwise the connection is held unanswered until the client
// gives up, the hold time passes or the proxy closes.
func (p *Proxy) cut(w http.ResponseWriter, r *http.Request, reset bool) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		if !reset {
			p.hold(r.Context(), nil)
		}
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if !reset {
		p.hold(r.Context(), conn)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

func (p *Proxy) hold(ctx context.Context, conn net.Conn) {
	p.held.Add(1)
	defer p.held.Add(-1)
	if conn == nil {
		select {
		case <-ctx.Done():
		case <-p.holdCtx.Done():
		case <-time.After(p.cfg.Hold):
		}
		return
	}
	// Reading returns when the client closes its end, the deadline passes or
	// the proxy shuts down (which moves the deadline to now).
	conn.SetReadDeadline(time.Now().Add(p.cfg.Hold))
	stop := context.AfterFunc(p.holdCtx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	io.Copy(io.Discard, conn)
}

// shapedWriter delays response bytes through the shared token bucket. The
// status line and headers are charged too, so small bodies still cost.
type shapedWriter struct {
	http.ResponseWriter
	p           *Proxy
	b           *bucket
	ctx         context.Context
	wroteHeader bool
}

func (s *shapedWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *shapedWriter) WriteHeader(code int) {
	if !s.wroteHeader {
		s.wroteHeader = true
		n := int64(len("HTTP/1.1 200 OK\r\n\r\n"))
		for k, vs := range s.Header() {
			for _, v := range vs {
				n += int64(len(k) + len(v) + 4)
			}
		}
		if err := s.take(n); err != nil {
			panic(http.ErrAbortHandler)
		}
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *shapedWriter) Write(b []byte) (int, error) {
	if !s.wroteHeader {
		s.WriteHeader(http.StatusOK)
	}
	written := 0
	for len(b) > 0 {
		n := len(b)
		if burst := int(s.b.cfg.BurstBytes); n > burst {
			n = burst
		}
		if err := s.take(int64(n)); err != nil {
			return written, err
		}
		m, err := s.ResponseWriter.Write(b[:n])
		written += m
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}

var errQueueFull = errors.New("bandwidth limit: queue full")

func (s *shapedWriter) take(n int64) error {
	wait, ok := s.b.reserve(n, time.Now())
	if !ok {
		s.p.bwDropped.Add(1)
		return errQueueFull
	}
	if wait <= 0 {
		return nil
	}
	defer s.b.release(n)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

// ------------------------------------------------------------------ admin

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	return Stats{Requests: p.requests.Load(), Proxied: p.proxied.Load(), NoUpstream: p.noUpstream.Load(),
		UpstreamErrors: p.upstreamErrors.Load(), Delayed: p.delayed.Load(), Lost: p.lost.Load(),
		Partitioned: p.partitioned.Load(), BandwidthDropped: p.bwDropped.Load(), Held: p.held.Load(),
		Upstreams: p.Upstreams()}
}

// AdminHandler serves the admin API:
//
//	GET    /healthz
//	GET    /faults                  active faults (null = off)
//	DELETE /faults                  clear every fault
//	PUT    /faults/{kind}           set delay | loss | partition | bandwidth (JSON parameters)
//	DELETE /faults/{kind}           clear one
//	GET    /upstreams               upstreams with health and counters
//	PUT    /upstreams               {"upstreams": [URL, ...]} replaces the set
//	POST   /upstreams               {"url": URL} adds one
//	DELETE /upstreams?url=URL       removes one
//	GET    /stats                   counters
func (p *Proxy) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /faults", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, p.Faults()) })
	mux.HandleFunc("DELETE /faults", func(w http.ResponseWriter, _ *http.Request) {
		fs, _ := p.ClearFault("")
		writeJSON(w, http.StatusOK, fs)
	})
	setFault := func(w http.ResponseWriter, r *http.Request) {
		fs, err := p.SetFault(r.PathValue("kind"), http.MaxBytesReader(w, r.Body, 1<<16))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, fs)
	}
	mux.HandleFunc("PUT /faults/{kind}", setFault)
	mux.HandleFunc("POST /faults/{kind}", setFault)
	mux.HandleFunc("DELETE /faults/{kind}", func(w http.ResponseWriter, r *http.Request) {
		fs, err := p.ClearFault(r.PathValue("kind"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, fs)
	})
	mux.HandleFunc("GET /upstreams", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"upstreams": p.Upstreams()})
	})
	mux.HandleFunc("PUT /upstreams", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Upstreams []string `json:"upstreams"`
		}
		if err := decodeStrict(w, r, &body); err != nil {
			writeError(w, err)
			return
		}
		if err := p.SetUpstreams(body.Upstreams); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"upstreams": p.Upstreams()})
	})
	mux.HandleFunc("POST /upstreams", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			URL string `json:"url"`
		}
		if err := decodeStrict(w, r, &body); err != nil {
			writeError(w, err)
			return
		}
		if err := p.AddUpstream(body.URL); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"upstreams": p.Upstreams()})
	})
	mux.HandleFunc("DELETE /upstreams", func(w http.ResponseWriter, r *http.Request) {
		found, err := p.RemoveUpstream(r.URL.Query().Get("url"))
		if err != nil {
			writeError(w, err)
			return
		}
		code := http.StatusOK
		if !found {
			code = http.StatusNotFound
		}
		writeJSON(w, code, map[string]any{"removed": found, "upstreams": p.Upstreams()})
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, p.Stats()) })
	return mux
}

func decodeStrict(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON body: %v", err)
	}
	return nil
}

func writeError(w http.ResponseWriter, err error) {
	var fe *FieldError
	var uk unknownKindError
	switch {
	case errors.As(err, &fe):
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": fe.Error(), "field": fe.Field, "value": fe.Value,
			"allowed": fe.Allowed})
	case errors.As(err, &uk):
		writeJSON(w, http.StatusNotFound, map[string]any{"error": uk.Error(), "field": "kind", "value": string(uk)})
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

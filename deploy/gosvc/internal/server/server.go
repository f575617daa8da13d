// Package server is the gosvc test-bed HTTP service: a /work endpoint with
// tunable CPU, allocation, lock-contention and downstream cost and Prometheus
// /metrics; on a separate admin listener, behind a bearer token, pprof and an
// /admin/knobs API that changes GOMAXPROCS, GOGC, GOMEMLIMIT, the object-pool
// size and the connection-pool size at run time.
package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Work is the cost of one /work request.
type Work struct {
	CPUUs      int64 // microseconds of CPU computation (converted with the calibration)
	CPUIters   int64 // explicit iteration count; overrides CPUUs when > 0
	MutexUs    int64 // microseconds of CPU computation while holding the global mutex
	AllocBytes int64 // size of each buffer taken from the pool
	AllocCount int64 // buffers per request
}

// Config configures a Server.
type Config struct {
	Work              Work
	Downstream        string        // URL called once per /work request; "" for none
	DownstreamTimeout time.Duration // per downstream call
	AdminToken        string        // bearer token of /admin/knobs and /debug/pprof/, >= MinTokenBytes; "" disables both (403)
	ItersPerUs        float64       // Spin iterations per microsecond; 0 calibrates at start
	Initial           KnobsPatch    // knobs applied at start
}

// Server holds the service state. Create it with New.
type Server struct {
	cfg        Config
	tokenHash  [32]byte
	itersPerUs float64

	mu   sync.Mutex // the global lock of the contended section
	pool *BufPool

	knobMu   sync.Mutex // serialises knob updates
	connPool atomic.Int64
	client   atomic.Pointer[http.Client]

	sink atomic.Uint64 // keeps computations observable to the compiler

	m *serverMetrics
}

// New builds a server and applies cfg.Initial.
func New(cfg Config) (*Server, error) {
	if cfg.DownstreamTimeout <= 0 {
		cfg.DownstreamTimeout = 2 * time.Second
	}
	if cfg.Work.AllocCount <= 0 && cfg.Work.AllocBytes > 0 {
		cfg.Work.AllocCount = 1
	}
	rate := cfg.ItersPerUs
	if rate == 0 {
		rate = ItersPerMicrosecond()
	} else if !(rate > 0) || math.IsInf(rate, 0) {
		return nil, fmt.Errorf("iterations per microsecond %v: want a positive finite number, or 0 to calibrate", rate)
	}
	if err := CheckToken(cfg.AdminToken); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, itersPerUs: rate, pool: NewBufPool(DefaultPoolSize), m: newServerMetrics()}
	s.tokenHash = sha256.Sum256([]byte(cfg.AdminToken))
	s.connPool.Store(DefaultConnPool)
	s.client.Store(newClient(DefaultConnPool, cfg.DownstreamTimeout))
	if err := cfg.Initial.Validate(); err != nil {
		return nil, err
	}
	s.ApplyKnobs(cfg.Initial)
	return s, nil
}

// Defaults of the pool knobs when not given.
const (
	DefaultPoolSize = 1024
	DefaultConnPool = 64
)

func newClient(conns int64, timeout time.Duration) *http.Client {
	t := &http.Transport{
		Proxy:               nil,
		MaxConnsPerHost:     int(conns),
		MaxIdleConns:        int(conns),
		MaxIdleConnsPerHost: int(conns),
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &http.Client{Transport: t, Timeout: timeout}
}

// Knobs returns the current knob values.
func (s *Server) Knobs() Knobs {
	procs, gogc, memlimit := readRuntimeKnobs()
	return Knobs{GOMAXPROCS: procs, GOGC: gogc, GOMEMLIMITBytes: memlimit,
		ObjectPoolSize: s.pool.Limit(), ConnPoolSize: s.connPool.Load()}
}

// ApplyKnobs validates and applies a partial knob update.
func (s *Server) ApplyKnobs(p KnobsPatch) (Knobs, error) {
	if err := p.Validate(); err != nil {
		return s.Knobs(), err
	}
	s.knobMu.Lock()
	defer s.knobMu.Unlock()
	applyRuntime(p)
	if p.ObjectPoolSize != nil {
		s.pool.SetLimit(*p.ObjectPoolSize)
	}
	if p.ConnPoolSize != nil && *p.ConnPoolSize != s.connPool.Load() {
		// A Transport's MaxConnsPerHost cannot change after use: swap in a new
		// client; requests in flight finish on the old one.
		old := s.client.Swap(newClient(*p.ConnPoolSize, s.cfg.DownstreamTimeout))
		s.connPool.Store(*p.ConnPoolSize)
		old.CloseIdleConnections()
	}
	return s.Knobs(), nil
}

// Pool exposes the buffer pool (for tests and metrics).
func (s *Server) Pool() *BufPool { return s.pool }

// Handler returns the main mux: /work, /healthz and /metrics. The admin API and
// pprof are never on it: they are on AdminHandler's listener.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/work", s.handleWork)
	mux.HandleFunc("/healthz", handleHealthz)
	mux.HandleFunc("/metrics", s.handleMetrics)
	return mux
}

// AdminHandler returns the mux of the admin listener: /admin/knobs and
// /debug/pprof/, both behind the bearer token, and an open /healthz.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/admin/knobs", s.requireToken(s.handleKnobs))
	mux.HandleFunc("/debug/pprof/", s.requireToken(pprof.Index))
	mux.HandleFunc("/debug/pprof/cmdline", s.requireToken(pprof.Cmdline))
	mux.HandleFunc("/debug/pprof/profile", s.requireToken(pprof.Profile))
	mux.HandleFunc("/debug/pprof/symbol", s.requireToken(pprof.Symbol))
	mux.HandleFunc("/debug/pprof/trace", s.requireToken(pprof.Trace))
	mux.HandleFunc("/healthz", handleHealthz)
	return mux
}

func handleHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok\n")
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// statusRecorder captures the status code for metrics.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (s *Server) handleWork(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	s.m.inflight.Add(1)
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
	defer func() {
		s.m.inflight.Add(-1)
		s.m.observe("/work", rec.code, time.Since(start))
	}()
	work, err := s.workFor(r)
	if err != nil {
		writeJSON(rec, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if err := s.doWork(r.Context(), work); err != nil {
		writeJSON(rec, http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	rec.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(rec, "ok\n")
}

// queryLimits bound per-request overrides so one request cannot wedge the service.
var queryLimits = map[string]int64{
	"cpu_us": 10_000_000, "cpu_iters": 1 << 40, "mutex_us": 10_000_000,
	"alloc_bytes": 64 << 20, "alloc_count": 1024,
}

// workFor applies optional query overrides (?cpu_us=&cpu_iters=&mutex_us=&alloc_bytes=&alloc_count=).
func (s *Server) workFor(r *http.Request) (Work, error) {
	w := s.cfg.Work
	if r.URL.RawQuery == "" {
		return w, nil
	}
	q := r.URL.Query()
	for name, dst := range map[string]*int64{
		"cpu_us": &w.CPUUs, "cpu_iters": &w.CPUIters, "mutex_us": &w.MutexUs,
		"alloc_bytes": &w.AllocBytes, "alloc_count": &w.AllocCount,
	} {
		raw := q.Get(name)
		if raw == "" {
			continue
		}
		v, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || v < 0 || v > queryLimits[name] {
			return w, fmt.Errorf("query parameter %s=%q: want an integer in 0..%d", name, raw, queryLimits[name])
		}
		*dst = v
	}
	if w.AllocBytes > 0 && w.AllocCount == 0 && q.Get("alloc_count") == "" {
		w.AllocCount = 1
	}
	return w, nil
}

func (s *Server) doWork(ctx context.Context, w Work) error {
	var bufs [][]byte
	if w.AllocBytes > 0 {
		bufs = make([][]byte, 0, w.AllocCount)
		for i := int64(0); i < w.AllocCount; i++ {
			b := s.pool.Get(int(w.AllocBytes))
			s.sink.Add(touch(b))
			bufs = append(bufs, b)
		}
	}
	iters := w.CPUIters
	if iters <= 0 {
		iters = int64(float64(w.CPUUs) * s.itersPerUs)
	}
	if iters > 0 {
		s.sink.Add(Spin(iters, uint64(len(bufs))+1))
	}
	if w.MutexUs > 0 {
		n := int64(float64(w.MutexUs) * s.itersPerUs)
		s.mu.Lock()
		s.sink.Add(Spin(n, 7))
		s.mu.Unlock()
	}
	var err error
	if s.cfg.Downstream != "" {
		err = s.callDownstream(ctx)
	}
	for _, b := range bufs {
		s.pool.Put(b)
	}
	return err
}

// touch writes one byte per 512 so the buffer is really used (and a fresh
// allocation really paged in).
func touch(b []byte) uint64 {
	var acc uint64
	for i := 0; i < len(b); i += 512 {
		b[i] = byte(i)
		acc += uint64(b[i])
	}
	return acc
}

func (s *Server) callDownstream(ctx context.Context) error {
	s.m.downstreamRequests.Inc()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.Downstream, nil)
	if err != nil {
		s.m.downstreamErrors.Inc()
		return fmt.Errorf("downstream: %v", err)
	}
	resp, err := s.client.Load().Do(req)
	if err != nil {
		s.m.downstreamErrors.Inc()
		return fmt.Errorf("downstream: %v", err)
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	if err == nil && resp.StatusCode >= 400 {
		err = fmt.Errorf("downstream status %d", resp.StatusCode)
	}
	if err != nil {
		s.m.downstreamErrors.Inc()
		return fmt.Errorf("downstream: %v", err)
	}
	return nil
}

// --- admin ---

const adminDisabledMsg = "admin API (/admin/knobs, /debug/pprof/) disabled: no token configured; start gosvc serve with " +
	"--admin-token-file FILE or set GOSVC_ADMIN_TOKEN, then send 'Authorization: Bearer <token>'"

// MinTokenBytes is the length of the shortest admin token gosvc accepts.
const MinTokenBytes = 16

// CheckToken refuses a non-empty admin token shorter than MinTokenBytes ("" disables admin).
func CheckToken(token string) error {
	if token != "" && len(token) < MinTokenBytes {
		return fmt.Errorf("the admin token is %d bytes, fewer than the %d required", len(token), MinTokenBytes)
	}
	return nil
}

func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return false
	}
	// Hash both sides so the comparison time depends on neither token's length.
	got := sha256.Sum256([]byte(strings.TrimSpace(h[len(prefix):])))
	return subtle.ConstantTimeCompare(got[:], s.tokenHash[:]) == 1
}

// requireToken serves next only to requests carrying the admin bearer token:
// 403 when no token is configured, 401 when it is missing or wrong.
func (s *Server) requireToken(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.AdminToken == "" {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": adminDisabledMsg})
			return
		}
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gosvc-admin"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{
				"error": "missing or wrong bearer token: send 'Authorization: Bearer <token>'"})
			return
		}
		next(w, r)
	}
}

func (s *Server) handleKnobs(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.Knobs())
	case http.MethodPut, http.MethodPatch:
		p, errBody := decodePatch(w, r)
		if errBody != nil {
			writeJSON(w, http.StatusBadRequest, errBody)
			return
		}
		k, err := s.ApplyKnobs(p)
		var re *RangeError
		if errors.As(err, &re) {
			writeJSON(w, http.StatusBadRequest, map[string]any{
				"error": re.Error(), "field": re.Field, "value": re.Value, "allowed": re.Allowed})
			return
		}
		writeJSON(w, http.StatusOK, k)
	default:
		w.Header().Set("Allow", "GET, PUT, PATCH")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "use GET or PUT"})
	}
}

const knobsExample = `{"gomaxprocs":2,"gogc":100,"gomemlimit_bytes":0,"object_pool_size":1024,"conn_pool_size":64}`

func decodePatch(w http.ResponseWriter, r *http.Request) (KnobsPatch, map[string]any) {
	var p KnobsPatch
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	err := dec.Decode(&p)
	if err == nil && dec.More() {
		err = errors.New("trailing data after the JSON object")
	}
	if err == nil {
		return p, nil
	}
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &te):
		return p, map[string]any{"field": te.Field,
			"error": fmt.Sprintf("field %q: got JSON %s, want an integer", te.Field, te.Value)}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return p, map[string]any{"field": field,
			"error": fmt.Sprintf("unknown field %q; allowed fields: %s", field, strings.Join(KnobFields, ", "))}
	default:
		return p, map[string]any{"error": fmt.Sprintf("request body must be one JSON object like %s: %v", knobsExample, err)}
	}
}

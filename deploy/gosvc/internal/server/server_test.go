package server

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"gosvc/internal/promtext"
)

func restoreRuntime(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	gogc := debug.SetGCPercent(100)
	debug.SetGCPercent(gogc)
	limit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		runtime.GOMAXPROCS(procs)
		debug.SetGCPercent(gogc)
		debug.SetMemoryLimit(limit)
	})
}

// testToken is an admin token of the minimum length (16 bytes).
const testToken = "0123456789abcdef"

func newTestServer(t *testing.T, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	restoreRuntime(t)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts
}

// newAdminServer serves s's admin listener (/admin/knobs, /debug/pprof/).
func newAdminServer(t *testing.T, s *Server) *httptest.Server {
	t.Helper()
	as := httptest.NewServer(s.AdminHandler())
	t.Cleanup(as.Close)
	return as
}

// getWithToken GETs url with 'Authorization: Bearer token' ("" sends none).
func getWithToken(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func scrape(t *testing.T, base string) map[string]*promtext.Family {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("content type %q", ct)
	}
	body, _ := io.ReadAll(resp.Body)
	fams, err := promtext.Parse(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("invalid exposition: %v\n%s", err, body)
	}
	return fams
}

func value(t *testing.T, fams map[string]*promtext.Family, family, sample string, labels map[string]string) float64 {
	t.Helper()
	f, ok := fams[family]
	if !ok {
		t.Fatalf("family %s missing", family)
	}
	v, ok := f.Find(sample, labels)
	if !ok {
		t.Fatalf("sample %s%v missing in %+v", sample, labels, f.Samples)
	}
	return v
}

func TestMetricsExpositionValid(t *testing.T) {
	s, ts := newTestServer(t, Config{Work: Work{CPUUs: 50, AllocBytes: 4096, AllocCount: 2, MutexUs: 10}})
	for i := 0; i < 20; i++ {
		if code, body := get(t, ts.URL+"/work"); code != 200 {
			t.Fatalf("/work: %d %s", code, body)
		}
	}
	if code, _ := get(t, ts.URL+"/work?cpu_us=abc"); code != 400 {
		t.Fatalf("bad query: %d", code)
	}
	fams := scrape(t, ts.URL)
	want := map[string]string{
		"go_goroutines": "gauge", "go_threads": "gauge", "go_sched_gomaxprocs_threads": "gauge",
		"go_gc_cycles_total_gc_cycles_total": "counter", "go_gc_gogc_percent": "gauge",
		"go_gc_gomemlimit_bytes": "gauge", "go_memstats_alloc_bytes_total": "counter",
		"go_memstats_heap_alloc_bytes": "gauge", "go_gc_heap_live_bytes": "gauge", "go_gc_heap_goal_bytes": "gauge",
		"go_gc_heap_allocs_bytes_total": "counter", "go_cpu_classes_gc_total_cpu_seconds_total": "counter",
		"go_cpu_classes_total_cpu_seconds_total": "counter", "go_info": "gauge", "process_cpu_seconds_total": "counter",
		"go_gc_duration_seconds": "summary", "go_sched_latencies_seconds": "histogram",
		"http_request_duration_seconds": "histogram", "http_requests_total": "counter",
		"http_request_errors_total": "counter", "gosvc_pool_hits_total": "counter", "gosvc_pool_misses_total": "counter",
		"gosvc_inflight_requests": "gauge", "gosvc_knob_gomaxprocs": "gauge", "gosvc_knob_gogc": "gauge",
		"gosvc_knob_gomemlimit_bytes": "gauge", "gosvc_knob_object_pool_size": "gauge", "gosvc_knob_conn_pool_size": "gauge",
		"gosvc_spin_iterations_per_cpu_second": "gauge",
	}
	for name, typ := range want {
		f, ok := fams[name]
		if !ok {
			t.Errorf("family %s missing", name)
			continue
		}
		if f.Type != typ {
			t.Errorf("%s: TYPE %s, want %s", name, f.Type, typ)
		}
	}
	if _, ok := fams["go_info"].Find("go_info", map[string]string{"version": runtime.Version()}); !ok {
		t.Errorf("go_info lacks version=%s", runtime.Version())
	}
	if n := value(t, fams, "http_request_duration_seconds", "http_request_duration_seconds_count", map[string]string{"handler": "/work"}); n != 21 {
		t.Errorf("duration count = %v, want 21", n)
	}
	if n := value(t, fams, "http_requests_total", "http_requests_total", map[string]string{"handler": "/work", "code": "200"}); n != 20 {
		t.Errorf("requests code=200 = %v", n)
	}
	if n := value(t, fams, "http_requests_total", "http_requests_total", map[string]string{"code": "400"}); n != 1 {
		t.Errorf("requests code=400 = %v", n)
	}
	// Base units: the calibration is exported per second of CPU, not per microsecond.
	if v := value(t, fams, "gosvc_spin_iterations_per_cpu_second", "gosvc_spin_iterations_per_cpu_second", nil); v != s.itersPerUs*1e6 {
		t.Errorf("gosvc_spin_iterations_per_cpu_second = %v, want %v", v, s.itersPerUs*1e6)
	}
	if v := value(t, fams, "go_gc_gogc_percent", "go_gc_gogc_percent", nil); v != float64(debugGCPercent()) {
		t.Errorf("go_gc_gogc_percent = %v", v)
	}
	// The buckets must resolve 0.5 ms .. 200 ms.
	for _, le := range []string{"0.0005", "0.001", "0.01", "0.1", "0.2"} {
		value(t, fams, "http_request_duration_seconds", "http_request_duration_seconds_bucket", map[string]string{"le": le})
	}
	// On this machine the cpu cgroup is usually readable; when it is, all four appear.
	if _, ok := fams["gosvc_cfs_periods_total"]; ok {
		for _, n := range []string{"gosvc_cfs_throttled_periods_total", "gosvc_cfs_throttled_seconds_total", "gosvc_cpu_quota_cores"} {
			if _, ok := fams[n]; !ok {
				t.Errorf("%s missing while gosvc_cfs_periods_total present", n)
			}
		}
	}
}

func debugGCPercent() int {
	v := debug.SetGCPercent(100)
	debug.SetGCPercent(v)
	return v
}

var pprofPaths = []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/heap?debug=1", "/debug/pprof/cmdline",
	"/debug/pprof/symbol"}

func TestPprofAbsentOnMainListener(t *testing.T) {
	_, ts := newTestServer(t, Config{AdminToken: testToken})
	for _, p := range pprofPaths {
		if code, _ := getWithToken(t, ts.URL+p, testToken); code != 404 {
			t.Errorf("main listener %s: %d, want 404 (pprof is on the admin listener only)", p, code)
		}
	}
	if code, body := get(t, ts.URL+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
}

func TestPprofOnAdminListenerNeedsTheToken(t *testing.T) {
	s, _ := newTestServer(t, Config{AdminToken: testToken})
	as := newAdminServer(t, s)
	for _, p := range pprofPaths {
		if code, _ := getWithToken(t, as.URL+p, ""); code != 401 {
			t.Errorf("admin %s without a token: %d, want 401", p, code)
		}
		if code, _ := getWithToken(t, as.URL+p, testToken[:15]+"x"); code != 401 {
			t.Errorf("admin %s with a wrong token: %d, want 401", p, code)
		}
		if code, body := getWithToken(t, as.URL+p, testToken); code != 200 || len(body) == 0 {
			t.Errorf("admin %s with the token: %d, want 200", p, code)
		}
	}
	if code, body := get(t, as.URL+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("admin /healthz: %d %q", code, body)
	}
	// Without a configured token pprof is off like the knobs API.
	open, _ := newTestServer(t, Config{})
	if code, body := getWithToken(t, newAdminServer(t, open).URL+"/debug/pprof/", "anything-at-all-16"); code != 403 ||
		!strings.Contains(body, "GOSVC_ADMIN_TOKEN") {
		t.Errorf("admin pprof without a configured token: %d %s, want 403", code, body)
	}
}

type adminResp struct {
	code int
	body map[string]any
}

func admin(t *testing.T, method, url, token, body string) adminResp {
	t.Helper()
	req, _ := http.NewRequest(method, url+"/admin/knobs", strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("%s %s: body is not JSON: %v", method, url, err)
	}
	return adminResp{resp.StatusCode, m}
}

func TestAdminAuthAndKnobs(t *testing.T) {
	const tok = "s3cret-s3cret-s3cret"
	s, _ := newTestServer(t, Config{AdminToken: tok})
	ts := newAdminServer(t, s)
	if r := admin(t, "GET", ts.URL, "", ""); r.code != 401 || r.body["error"] == nil {
		t.Fatalf("no token: %+v", r)
	}
	if r := admin(t, "GET", ts.URL, "wrong", ""); r.code != 401 {
		t.Fatalf("wrong token: %+v", r)
	}
	if r := admin(t, "PUT", ts.URL, tok[:len(tok)-1], `{"gogc":50}`); r.code != 401 {
		t.Fatalf("prefix of token: %+v", r)
	}
	r := admin(t, "GET", ts.URL, tok, "")
	if r.code != 200 || r.body["gomaxprocs"] != float64(runtime.GOMAXPROCS(0)) {
		t.Fatalf("GET: %+v", r)
	}
	for _, f := range KnobFields {
		if _, ok := r.body[f]; !ok {
			t.Fatalf("GET lacks %s: %+v", f, r.body)
		}
	}

	r = admin(t, "PUT", ts.URL, tok, `{"gomaxprocs":1,"gogc":37,"gomemlimit_bytes":1073741824}`)
	if r.code != 200 {
		t.Fatalf("PUT: %+v", r)
	}
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Fatalf("GOMAXPROCS = %d after PUT", got)
	}
	if got := debugGCPercent(); got != 37 {
		t.Fatalf("GOGC = %d after PUT", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 1<<30 {
		t.Fatalf("memory limit = %d after PUT", got)
	}
	if r.body["gogc"] != float64(37) || r.body["object_pool_size"] != float64(DefaultPoolSize) {
		t.Fatalf("PUT response: %+v", r.body)
	}
	// Partial update leaves the rest alone; 0 means unlimited.
	r = admin(t, "PUT", ts.URL, tok, `{"gomemlimit_bytes":0,"gogc":-1}`)
	if r.code != 200 || debug.SetMemoryLimit(-1) != math.MaxInt64 || debugGCPercent() != -1 || runtime.GOMAXPROCS(0) != 1 {
		t.Fatalf("partial PUT: %+v", r)
	}
	if r.body["gogc"] != float64(-1) || r.body["gomemlimit_bytes"] != float64(0) {
		t.Fatalf("readback: %+v", r.body)
	}

	cases := []struct {
		body, field, want string
	}{
		{`{"gomaxprocs":0}`, "gomaxprocs", "gomaxprocs=0 is out of range: allowed 1..1024"},
		{`{"gomaxprocs":2000}`, "gomaxprocs", "1..1024"},
		{`{"gogc":0}`, "gogc", "gogc=0 is out of range: allowed -1 (GC off) or 1..100000"},
		{`{"gomemlimit_bytes":1000}`, "gomemlimit_bytes", "gomemlimit_bytes=1000 is out of range"},
		{`{"object_pool_size":-1}`, "object_pool_size", "0..1000000"},
		{`{"conn_pool_size":0}`, "conn_pool_size", "conn_pool_size=0 is out of range: allowed 1..10000"},
		{`{"gogc":50,"turbo":true}`, "turbo", `unknown field "turbo"; allowed fields: gomaxprocs, gogc`},
		{`{"gogc":"high"}`, "gogc", `field "gogc": got JSON string, want an integer`},
		{`{"gogc":1.5}`, "gogc", `want an integer`},
	}
	for _, c := range cases {
		r := admin(t, "PUT", ts.URL, tok, c.body)
		msg, _ := r.body["error"].(string)
		if r.code != 400 || r.body["field"] != c.field || !strings.Contains(msg, c.want) {
			t.Errorf("PUT %s: got %d %+v, want 400 naming %s with %q", c.body, r.code, r.body, c.field, c.want)
		}
	}
	if r := admin(t, "PUT", ts.URL, tok, `not json`); r.code != 400 || !strings.Contains(r.body["error"].(string), "JSON object") {
		t.Errorf("garbage body: %+v", r)
	}
	// Nothing of a rejected request was applied.
	if got := debugGCPercent(); got != -1 {
		t.Fatalf("rejected PUT changed GOGC to %d", got)
	}
	if s.Knobs().ObjectPoolSize != DefaultPoolSize {
		t.Fatal("rejected PUT changed pool size")
	}
}

func TestAdminDisabledWithoutToken(t *testing.T) {
	s, _ := newTestServer(t, Config{})
	r := admin(t, "PUT", newAdminServer(t, s).URL, "anything", `{"gogc":50}`)
	if r.code != 403 || !strings.Contains(r.body["error"].(string), "GOSVC_ADMIN_TOKEN") {
		t.Fatalf("got %+v", r)
	}
}

func TestAdminNeverOnMainListener(t *testing.T) {
	s, ts := newTestServer(t, Config{AdminToken: testToken})
	for _, m := range []string{"GET", "PUT"} {
		req, _ := http.NewRequest(m, ts.URL+"/admin/knobs", strings.NewReader(`{"gogc":50}`))
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Fatalf("%s /admin/knobs on the main listener: %d, want 404", m, resp.StatusCode)
		}
	}
	if r := admin(t, "GET", newAdminServer(t, s).URL, testToken, ""); r.code != 200 {
		t.Fatalf("admin listener: %+v", r)
	}
}

func TestShortTokenRefused(t *testing.T) {
	for _, tok := range []string{"t", "t0ken", "s3cret", testToken[:15]} {
		if _, err := New(Config{AdminToken: tok}); err == nil || !strings.Contains(err.Error(), "fewer than the 16 required") {
			t.Errorf("New with a %d-byte token: %v", len(tok), err)
		}
	}
	if _, err := New(Config{AdminToken: testToken}); err != nil {
		t.Errorf("16-byte token: %v", err)
	}
}

func TestPoolHitsAndMisses(t *testing.T) {
	s, ts := newTestServer(t, Config{Work: Work{AllocBytes: 8192, AllocCount: 2}, AdminToken: testToken})
	as := newAdminServer(t, s)
	if r := admin(t, "PUT", as.URL, testToken, `{"object_pool_size":0}`); r.code != 200 {
		t.Fatal(r)
	}
	for i := 0; i < 10; i++ {
		get(t, ts.URL+"/work")
	}
	fams := scrape(t, ts.URL)
	if h, m := value(t, fams, "gosvc_pool_hits_total", "gosvc_pool_hits_total", nil),
		value(t, fams, "gosvc_pool_misses_total", "gosvc_pool_misses_total", nil); h != 0 || m != 20 {
		t.Fatalf("pool size 0: hits=%v misses=%v, want 0/20", h, m)
	}
	if r := admin(t, "PUT", as.URL, testToken, `{"object_pool_size":16}`); r.code != 200 {
		t.Fatal(r)
	}
	for i := 0; i < 20; i++ {
		get(t, ts.URL+"/work")
	}
	hits, misses, pooled := s.Pool().Stats()
	if hits < 10 || misses < 20 || pooled > 16 {
		t.Fatalf("pool size 16: hits=%d misses=%d pooled=%d", hits, misses, pooled)
	}
	fams = scrape(t, ts.URL)
	if v := value(t, fams, "gosvc_knob_object_pool_size", "gosvc_knob_object_pool_size", nil); v != 16 {
		t.Fatalf("knob gauge = %v", v)
	}
}

func TestPoolBound(t *testing.T) {
	p := NewBufPool(3)
	var bufs [][]byte
	for i := 0; i < 10; i++ {
		bufs = append(bufs, p.Get(100))
	}
	for _, b := range bufs {
		p.Put(b)
	}
	if _, _, pooled := p.Stats(); pooled != 3 {
		t.Fatalf("pooled = %d, want cap 3", pooled)
	}
	if b := p.Get(50); len(b) != 50 {
		t.Fatalf("len %d", len(b))
	}
}

func TestDownstreamAndConnPoolKnob(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("fail") != "" {
			http.Error(w, "boom", 500)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer down.Close()
	s, ts := newTestServer(t, Config{Downstream: down.URL, AdminToken: testToken, Initial: KnobsPatch{ConnPoolSize: ptr(4)}})
	if got := s.client.Load().Transport.(*http.Transport).MaxConnsPerHost; got != 4 {
		t.Fatalf("MaxConnsPerHost = %d", got)
	}
	if code, body := get(t, ts.URL+"/work"); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	before := s.client.Load()
	if r := admin(t, "PUT", newAdminServer(t, s).URL, testToken, `{"conn_pool_size":9}`); r.code != 200 || r.body["conn_pool_size"] != float64(9) {
		t.Fatal(r)
	}
	after := s.client.Load()
	if after == before || after.Transport.(*http.Transport).MaxConnsPerHost != 9 {
		t.Fatal("transport not rebuilt with the new connection-pool size")
	}
	if code, _ := get(t, ts.URL+"/work"); code != 200 {
		t.Fatal(code)
	}

	bad, err := New(Config{Downstream: down.URL + "?fail=1"})
	if err != nil {
		t.Fatal(err)
	}
	bts := httptest.NewServer(bad.Handler())
	defer bts.Close()
	if code, _ := get(t, bts.URL+"/work"); code != 502 {
		t.Fatalf("failing downstream: %d, want 502", code)
	}
	fams := scrape(t, bts.URL)
	if v := value(t, fams, "http_request_errors_total", "http_request_errors_total", nil); v != 1 {
		t.Fatalf("errors = %v", v)
	}
	if v := value(t, fams, "gosvc_downstream_errors_total", "gosvc_downstream_errors_total", nil); v != 1 {
		t.Fatalf("downstream errors = %v", v)
	}
}

func ptr(v int64) *int64 { return &v }

func TestSpinIsCalibratedCPUWork(t *testing.T) {
	rate := ItersPerMicrosecond()
	if rate <= 0 {
		t.Fatalf("rate %v", rate)
	}
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s.doWork(context.Background(), Work{CPUUs: 20000})
	// 20 ms of CPU on a possibly busy 2-core box: allow slack both ways.
	if d := time.Since(start); d < 10*time.Millisecond || d > 400*time.Millisecond {
		t.Fatalf("20ms of CPU work took %v", d)
	}
}

func TestParseServeFlags(t *testing.T) {
	restoreRuntime(t)
	t.Setenv("GOSVC_ADMIN_TOKEN", "")
	if _, err := parseServe([]string{"--admin-addr", "0.0.0.0:9000"}, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "--admin-allow-remote") {
		t.Fatalf("non-loopback admin accepted: %v", err)
	}
	if _, err := parseServe([]string{"--admin-addr", "0.0.0.0:9000", "--admin-allow-remote"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	// The main listener carries no admin API, so a wildcard --addr is fine with a token.
	t.Setenv("GOSVC_ADMIN_TOKEN", testToken)
	if o, err := parseServe([]string{"--addr", ":8080"}, io.Discard); err != nil || o.adminAddr != DefaultAdminAddr {
		t.Fatalf("wildcard main address with the default admin listener: %v %+v", err, o)
	}
	if _, err := parseServe([]string{"--admin-addr", ""}, io.Discard); err == nil || !strings.Contains(err.Error(), "--admin-addr is empty") {
		t.Fatalf("empty --admin-addr (admin on the main listener) accepted: %v", err)
	}
	tokFile := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(tokFile, []byte("  from-file-0123456789\n"), 0o600)
	o, err := parseServe([]string{"--admin-token-file", tokFile, "--gogc", "-1", "--gomemlimit", "512MiB", "--gomaxprocs", "2", "--pool-size", "0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.AdminToken != "from-file-0123456789" || *o.cfg.Initial.GOGC != -1 || *o.cfg.Initial.GOMEMLIMITBytes != 512<<20 ||
		*o.cfg.Initial.GOMAXPROCS != 2 || *o.cfg.Initial.ObjectPoolSize != 0 || o.adminAddr != DefaultAdminAddr {
		t.Fatalf("parsed %+v", o.cfg)
	}
	o, _ = parseServe(nil, io.Discard)
	if o.cfg.Initial.GOGC != nil || o.cfg.Initial.GOMEMLIMITBytes != nil {
		t.Fatal("unset --gogc/--gomemlimit must leave the environment's values")
	}
	if o, err := parseServe([]string{"--gogc", "off"}, io.Discard); err != nil || *o.cfg.Initial.GOGC != -1 {
		t.Fatalf("--gogc off: %v", err)
	}
	if _, err := parseServe([]string{"--gogc", "lots"}, io.Discard); err == nil {
		t.Fatal("--gogc lots accepted")
	}
	if _, err := parseServe([]string{"--conn-pool", "0"}, io.Discard); err == nil || !strings.Contains(err.Error(), "conn_pool_size=0") {
		t.Fatalf("bad initial knob: %v", err)
	}
	for in, want := range map[string]int64{"0": 0, "1048576": 1 << 20, "2GiB": 2 << 30, "64M": 64 << 20} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v", in, got, err)
		}
	}
	if _, err := ParseBytes("lots"); err == nil {
		t.Error("ParseBytes accepted garbage")
	}
}

func TestItersPerUsFixesTheWorkPerRequest(t *testing.T) {
	s, err := New(Config{ItersPerUs: 123.5})
	if err != nil {
		t.Fatal(err)
	}
	if s.itersPerUs != 123.5 {
		t.Fatalf("itersPerUs = %v, want the configured 123.5", s.itersPerUs)
	}
	calibrated, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if calibrated.itersPerUs != ItersPerMicrosecond() {
		t.Fatalf("0 must calibrate: %v against %v", calibrated.itersPerUs, ItersPerMicrosecond())
	}
	for _, bad := range []float64{-1, math.Inf(1), math.NaN()} {
		if _, err := New(Config{ItersPerUs: bad}); err == nil || !strings.Contains(err.Error(), "iterations per microsecond") {
			t.Fatalf("ItersPerUs %v accepted: %v", bad, err)
		}
	}
	o, err := parseServe([]string{"--iters-per-us", "600.25"}, io.Discard)
	if err != nil || o.cfg.ItersPerUs != 600.25 {
		t.Fatalf("--iters-per-us 600.25: %v %v", o, err)
	}
	for _, bad := range []string{"-3", "NaN", "+Inf"} {
		if _, err := parseServe([]string{"--iters-per-us", bad}, io.Discard); err == nil || !strings.Contains(err.Error(), "--iters-per-us") {
			t.Fatalf("--iters-per-us %s accepted: %v", bad, err)
		}
	}
}

func TestParseServeRefusesShortTokens(t *testing.T) {
	restoreRuntime(t)
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("  t0ken  \n"), 0o600) // 5 bytes after trimming
	t.Setenv("GOSVC_ADMIN_TOKEN", "")
	_, err := parseServe([]string{"--admin-token-file", short}, io.Discard)
	for _, want := range []string{"--admin-token-file " + short, "5 bytes", "at least 16 random bytes", "openssl rand -hex 32"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("5-byte token file: %v; want it to name %q", err, want)
		}
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte(" \n"), 0o600)
	if _, err := parseServe([]string{"--admin-token-file", empty}, io.Discard); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty token file: %v", err)
	}
	t.Setenv("GOSVC_ADMIN_TOKEN", "secret")
	_, err = parseServe(nil, io.Discard)
	for _, want := range []string{"GOSVC_ADMIN_TOKEN", "6 bytes", "openssl rand -hex 32"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("6-byte GOSVC_ADMIN_TOKEN: %v; want it to name %q", err, want)
		}
	}
	t.Setenv("GOSVC_ADMIN_TOKEN", testToken)
	if o, err := parseServe(nil, io.Discard); err != nil || o.cfg.AdminToken != testToken {
		t.Errorf("16-byte GOSVC_ADMIN_TOKEN: %v", err)
	}
}

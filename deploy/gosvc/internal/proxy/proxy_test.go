package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// backend answers with its name; it can be switched to failing health checks.
type backend struct {
	name string
	srv  *httptest.Server
	mu   sync.Mutex
	sick bool
	body string
}

func newBackend(t *testing.T, name string) *backend {
	t.Helper()
	b := &backend{name: name, body: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		sick, body := b.sick, b.body
		b.mu.Unlock()
		if r.URL.Path == "/healthz" && sick {
			http.Error(w, "sick", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, body)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

type harness struct {
	p     *Proxy
	front *httptest.Server
	admin *httptest.Server
}

func newHarness(t *testing.T, cfg Config, ups ...string) *harness {
	t.Helper()
	p, err := New(cfg, ups)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{p: p, front: httptest.NewServer(p.Handler()), admin: httptest.NewServer(p.AdminHandler())}
	t.Cleanup(func() {
		p.Close()
		h.front.Close()
		h.admin.Close()
	})
	return h
}

func client(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64}}
}

func getBody(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return string(b), err
}

func adminDo(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: response is not JSON: %v", method, url, err)
	}
	return resp.StatusCode, out
}

func TestRoundRobinAndUpstreamsAPI(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	h := newHarness(t, Config{}, a.srv.URL)
	c := client(2 * time.Second)
	for i := 0; i < 4; i++ {
		if got, err := getBody(c, h.front.URL+"/work"); err != nil || got != "a" {
			t.Fatalf("one upstream: got %q, %v", got, err)
		}
	}
	code, out := adminDo(t, "POST", h.admin.URL+"/upstreams", `{"url":"`+b.srv.URL+`"}`)
	if code != 200 || len(out["upstreams"].([]any)) != 2 {
		t.Fatalf("POST /upstreams: %d %v", code, out)
	}
	counts := map[string]int{}
	for i := 0; i < 10; i++ {
		got, err := getBody(c, h.front.URL+"/work")
		if err != nil {
			t.Fatal(err)
		}
		counts[got]++
	}
	if counts["a"] != 5 || counts["b"] != 5 {
		t.Fatalf("round robin over two upstreams: %v, want 5/5", counts)
	}
	code, _ = adminDo(t, "DELETE", h.admin.URL+"/upstreams?url="+a.srv.URL, "")
	if code != 200 {
		t.Fatalf("DELETE /upstreams: %d", code)
	}
	if got, _ := getBody(c, h.front.URL+"/work"); got != "b" {
		t.Fatalf("after removing a: got %q", got)
	}
	code, _ = adminDo(t, "DELETE", h.admin.URL+"/upstreams?url="+a.srv.URL, "")
	if code != 404 {
		t.Fatalf("DELETE of an absent upstream: %d, want 404", code)
	}
	code, out = adminDo(t, "PUT", h.admin.URL+"/upstreams", `{"upstreams":[]}`)
	if code != 200 || len(out["upstreams"].([]any)) != 0 {
		t.Fatalf("PUT /upstreams []: %d %v", code, out)
	}
	resp, err := c.Get(h.front.URL + "/work")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("no upstream: status %d, want 503", resp.StatusCode)
	}
	code, out = adminDo(t, "PUT", h.admin.URL+"/upstreams", `{"upstreams":["ftp://x"]}`)
	if code != 400 || out["field"] != "upstreams" {
		t.Fatalf("bad upstream URL: %d %v", code, out)
	}
}

func TestDelayWithJitter(t *testing.T) {
	a := newBackend(t, "a")
	h := newHarness(t, Config{}, a.srv.URL)
	c := client(2 * time.Second)
	code, out := adminDo(t, "PUT", h.admin.URL+"/faults/delay", `{"latency_ms":60,"jitter_ms":20,"correlation":25}`)
	if code != 200 || out["delay"] == nil {
		t.Fatalf("PUT /faults/delay: %d %v", code, out)
	}
	for i := 0; i < 5; i++ {
		start := time.Now()
		if _, err := getBody(c, h.front.URL+"/work"); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 40*time.Millisecond || d > 1500*time.Millisecond {
			t.Fatalf("delayed request took %v, want 40..80 ms plus overhead", d)
		}
	}
	adminDo(t, "DELETE", h.admin.URL+"/faults/delay", "")
	if _, err := getBody(c, h.front.URL+"/work"); err != nil {
		t.Fatal(err)
	}
	if h.p.Stats().Delayed != 5 { // the request after clearing was not delayed
		t.Fatalf("delayed counter %d, want 5", h.p.Stats().Delayed)
	}
}

func TestLossResetAndDrop(t *testing.T) {
	a := newBackend(t, "a")
	h := newHarness(t, Config{Hold: 5 * time.Second}, a.srv.URL)
	adminDo(t, "PUT", h.admin.URL+"/faults/loss", `{"percent":100,"mode":"reset"}`)
	if _, err := getBody(client(2*time.Second), h.front.URL+"/work"); err == nil {
		t.Fatal("100 % reset loss: request succeeded")
	}
	adminDo(t, "PUT", h.admin.URL+"/faults/loss", `{"percent":100}`) // mode defaults to drop
	start := time.Now()
	_, err := getBody(client(300*time.Millisecond), h.front.URL+"/work")
	if err == nil || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("dropped request: err %v after %v, want a client timeout", err, time.Since(start))
	}
	adminDo(t, "PUT", h.admin.URL+"/faults/loss", `{"percent":30}`)
	c := client(200 * time.Millisecond)
	failed := 0
	for i := 0; i < 100; i++ {
		if _, err := getBody(c, h.front.URL+"/work"); err != nil {
			failed++
		}
	}
	if failed < 10 || failed > 55 {
		t.Fatalf("30 %% loss lost %d of 100 requests", failed)
	}
	adminDo(t, "DELETE", h.admin.URL+"/faults", "")
	if _, err := getBody(client(2*time.Second), h.front.URL+"/work"); err != nil {
		t.Fatalf("after clearing all faults: %v", err)
	}
}

func TestPartitionRefuseAndBlackhole(t *testing.T) {
	a := newBackend(t, "a")
	h := newHarness(t, Config{Hold: 5 * time.Second}, a.srv.URL)
	code, out := adminDo(t, "PUT", h.admin.URL+"/faults/partition", `{"mode":"refuse"}`)
	if code != 200 || out["partition"].(map[string]any)["fraction"].(float64) != 1 {
		t.Fatalf("partition defaults: %d %v", code, out)
	}
	start := time.Now()
	if _, err := getBody(client(2*time.Second), h.front.URL+"/work"); err == nil || time.Since(start) > time.Second {
		t.Fatalf("refused partition: err %v after %v, want a fast error", err, time.Since(start))
	}
	adminDo(t, "PUT", h.admin.URL+"/faults/partition", `{"fraction":1,"mode":"blackhole"}`)
	start = time.Now()
	if _, err := getBody(client(300*time.Millisecond), h.front.URL+"/work"); err == nil || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("blackholed request: err %v after %v, want a client timeout", err, time.Since(start))
	}
	adminDo(t, "PUT", h.admin.URL+"/faults/partition", `{"fraction":0.5,"mode":"refuse"}`)
	c := client(time.Second)
	failed := 0
	for i := 0; i < 200; i++ {
		if _, err := getBody(c, h.front.URL+"/work"); err != nil {
			failed++
		}
	}
	if failed < 60 || failed > 140 {
		t.Fatalf("half partition cut %d of 200 requests", failed)
	}
}

func TestBandwidthLimit(t *testing.T) {
	a := newBackend(t, "a")
	a.body = strings.Repeat("x", 20000)
	h := newHarness(t, Config{}, a.srv.URL)
	code, out := adminDo(t, "PUT", h.admin.URL+"/faults/bandwidth", `{"rate_bytes_per_s":100000,"burst_bytes":5000}`)
	if code != 200 {
		t.Fatalf("PUT /faults/bandwidth: %d %v", code, out)
	}
	c := client(5 * time.Second)
	start := time.Now()
	for i := 0; i < 5; i++ {
		body, err := getBody(c, h.front.URL+"/work")
		if err != nil || len(body) != 20000 {
			t.Fatalf("shaped response: %d bytes, %v", len(body), err)
		}
	}
	// 100 kB at 100 kB/s less the 5 kB burst: at least ~0.9 s.
	if d := time.Since(start); d < 850*time.Millisecond || d > 4*time.Second {
		t.Fatalf("100 kB through a 100 kB/s limit took %v", d)
	}
	// Five concurrent responses queue 5 kB behind a 2 kB limit: some are reset.
	adminDo(t, "PUT", h.admin.URL+"/faults/bandwidth", `{"rate_bytes_per_s":1000,"burst_bytes":1000,"limit_bytes":2000}`)
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			getBody(client(time.Second), h.front.URL+"/work")
		}()
	}
	wg.Wait()
	if h.p.Stats().BandwidthDropped == 0 {
		t.Fatal("bandwidth_dropped not counted")
	}
}

func TestFaultValidation(t *testing.T) {
	h := newHarness(t, Config{})
	cases := []struct {
		kind, body, field string
		code              int
	}{
		{"delay", `{"latency_ms":-1}`, "latency_ms", 400},
		{"delay", `{"latency_ms":10,"correlation":101}`, "correlation", 400},
		{"loss", `{"percent":5,"mode":"eat"}`, "mode", 400},
		{"partition", `{"fraction":2}`, "fraction", 400},
		{"bandwidth", `{"rate_bytes_per_s":0}`, "rate_bytes_per_s", 400},
		{"teleport", `{}`, "kind", 404},
	}
	for _, c := range cases {
		code, out := adminDo(t, "PUT", h.admin.URL+"/faults/"+c.kind, c.body)
		if code != c.code || out["field"] != c.field {
			t.Errorf("PUT /faults/%s %s: %d %v; want %d naming %q", c.kind, c.body, code, out, c.code, c.field)
		}
	}
	code, out := adminDo(t, "PUT", h.admin.URL+"/faults/delay", `{"latency":10}`)
	if code != 400 || !strings.Contains(out["error"].(string), "unknown field") {
		t.Errorf("unknown parameter: %d %v", code, out)
	}
	code, out = adminDo(t, "GET", h.admin.URL+"/faults", "")
	if code != 200 || out["delay"] != nil || out["loss"] != nil {
		t.Errorf("rejected updates must change nothing: %v", out)
	}
}

func TestHealthChecksEjectAndReadmit(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	h := newHarness(t, Config{HealthInterval: 20 * time.Millisecond, HealthFails: 2}, a.srv.URL, b.srv.URL)
	ctx, cancel := contextWithCancel()
	defer cancel()
	go h.p.RunHealthChecks(ctx)
	a.mu.Lock()
	a.sick = true
	a.mu.Unlock()
	waitFor(t, func() bool { return !h.p.Upstreams()[0].Healthy })
	c := client(time.Second)
	for i := 0; i < 6; i++ {
		if got, _ := getBody(c, h.front.URL+"/work"); got != "b" {
			t.Fatalf("with a ejected got %q", got)
		}
	}
	a.mu.Lock()
	a.sick = false
	a.mu.Unlock()
	waitFor(t, func() bool { return h.p.Upstreams()[0].Healthy })
	code, out := adminDo(t, "GET", h.admin.URL+"/stats", "")
	if code != 200 || out["requests"].(float64) != 6 {
		t.Fatalf("GET /stats: %d %v", code, out)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 3s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBucketReservations(t *testing.T) {
	now := time.Unix(0, 0)
	b := newBucket(Bandwidth{RateBytesPerS: 1000, BurstBytes: 500, LimitBytes: 1000}, now)
	if w, ok := b.reserve(500, now); !ok || w != 0 {
		t.Fatalf("burst: wait %v ok %v", w, ok)
	}
	if w, ok := b.reserve(500, now); !ok || w != 500*time.Millisecond {
		t.Fatalf("over the burst: wait %v ok %v, want 500ms", w, ok)
	}
	if _, ok := b.reserve(600, now); ok {
		t.Fatal("queue limit of 1000 bytes exceeded with 1100 waiting")
	}
	b.release(500)
	if w, ok := b.reserve(100, now.Add(time.Second)); !ok || w != 0 {
		t.Fatalf("after a second of refill: wait %v ok %v", w, ok)
	}
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

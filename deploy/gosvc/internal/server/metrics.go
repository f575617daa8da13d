package server

import (
	"math"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"gosvc/internal/cgroup"
	"gosvc/internal/promtext"
)

var processStart = time.Now()

type codeKey struct {
	handler string
	code    int
}

type serverMetrics struct {
	duration           *promtext.Histogram // handler="/work"
	inflight           promtext.Gauge
	downstreamRequests promtext.Counter
	downstreamErrors   promtext.Counter

	mu     sync.Mutex
	byCode map[codeKey]uint64
	errors map[string]uint64
}

func newServerMetrics() *serverMetrics {
	return &serverMetrics{
		duration: promtext.NewHistogram(promtext.LatencyBuckets()),
		byCode:   map[codeKey]uint64{{"/work", 200}: 0}, // a series exists before the first request
		errors:   map[string]uint64{"/work": 0},
	}
}

func (m *serverMetrics) observe(handler string, code int, d time.Duration) {
	m.duration.Observe(d.Seconds())
	m.mu.Lock()
	m.byCode[codeKey{handler, code}]++
	if code >= 500 {
		m.errors[handler]++
	}
	m.mu.Unlock()
}

// runtimeMetric maps a runtime/metrics name to the client_golang-style name.
type runtimeMetric struct {
	src, name, typ, help string
}

var runtimeMetrics = []runtimeMetric{
	{"/sched/goroutines:goroutines", "go_goroutines", "gauge", "Number of goroutines that currently exist."},
	{"/sched/threads/total:threads", "go_threads", "gauge", "Number of OS threads the Go runtime owns."},
	{"/sched/gomaxprocs:threads", "go_sched_gomaxprocs_threads", "gauge", "The current runtime.GOMAXPROCS setting."},
	{"/sched/goroutines/runnable:goroutines", "go_sched_goroutines_runnable_goroutines", "gauge", "Goroutines ready to run but not running (run-queue length)."},
	{"/sched/goroutines-created:goroutines", "go_sched_goroutines_created_goroutines_total", "counter", "Goroutines created since the program started."},
	{"/gc/cycles/total:gc-cycles", "go_gc_cycles_total_gc_cycles_total", "counter", "Count of all completed GC cycles."},
	{"/gc/gogc:percent", "go_gc_gogc_percent", "gauge", "Heap size target percentage (GOGC); -1 when the GC is off."},
	{"/gc/gomemlimit:bytes", "go_gc_gomemlimit_bytes", "gauge", "Go runtime memory limit (GOMEMLIMIT); 9223372036854775807 when unlimited."},
	{"/gc/heap/allocs:bytes", "go_memstats_alloc_bytes_total", "counter", "Total bytes allocated on the heap, even if freed."},
	{"/memory/classes/heap/objects:bytes", "go_memstats_heap_alloc_bytes", "gauge", "Bytes in heap objects, live or not yet swept."},
	{"/gc/heap/live:bytes", "go_gc_heap_live_bytes", "gauge", "Heap bytes marked live by the previous GC."},
	{"/gc/heap/goal:bytes", "go_gc_heap_goal_bytes", "gauge", "Heap size target for the end of the GC cycle."},
	{"/gc/heap/allocs:bytes", "go_gc_heap_allocs_bytes_total", "counter", "Cumulative bytes allocated on the heap."},
	{"/gc/heap/allocs:objects", "go_gc_heap_allocs_objects_total", "counter", "Cumulative heap objects allocated."},
	{"/gc/heap/objects:objects", "go_gc_heap_objects_objects", "gauge", "Heap objects, live or unswept."},
	{"/cpu/classes/gc/total:cpu-seconds", "go_cpu_classes_gc_total_cpu_seconds_total", "counter", "Estimated CPU time spent performing GC tasks."},
	{"/cpu/classes/total:cpu-seconds", "go_cpu_classes_total_cpu_seconds_total", "counter", "Estimated total available CPU time (GOMAXPROCS integrated over wall time)."},
	{"/cpu/classes/user:cpu-seconds", "go_cpu_classes_user_cpu_seconds_total", "counter", "Estimated CPU time spent running user Go code."},
	{"/cpu/classes/idle:cpu-seconds", "go_cpu_classes_idle_cpu_seconds_total", "counter", "Estimated CPU time available but unused by the Go runtime."},
	{"/sync/mutex/wait/total:seconds", "go_sync_mutex_wait_total_seconds_total", "counter", "Approximate time goroutines spent blocked on a sync.Mutex or RWMutex."},
}

const schedLatencySrc = "/sched/latencies:seconds"

// schedBuckets resolve run-queue waits from 1 us to 1 s.
var schedBuckets = []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3,
	2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}

func (s *Server) handleMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", promtext.ContentType)
	pw := promtext.NewWriter(w)
	s.writeMetrics(pw)
	pw.Flush()
}

func (s *Server) writeMetrics(pw *promtext.Writer) {
	writeRuntime(pw)
	writeProcess(pw)
	s.writeHTTP(pw)
	s.writeService(pw)
	st, ok := cgroup.ReadCPU("/")
	writeCgroup(pw, st, ok)
}

func writeRuntime(pw *promtext.Writer) {
	samples := make([]metrics.Sample, len(runtimeMetrics)+1)
	for i, m := range runtimeMetrics {
		samples[i].Name = m.src
	}
	samples[len(runtimeMetrics)].Name = schedLatencySrc
	metrics.Read(samples)
	for i, m := range runtimeMetrics {
		v, ok := sampleValue(samples[i])
		if !ok {
			continue
		}
		if m.src == "/gc/gogc:percent" {
			v = float64(int64(samples[i].Value.Uint64()))
		}
		pw.Single(m.name, m.help, m.typ, v)
	}
	if h := samples[len(runtimeMetrics)]; h.Value.Kind() == metrics.KindFloat64Histogram {
		pw.Header("go_sched_latencies_seconds", "Time goroutines spent runnable before running (scheduler latency); _sum is estimated from bucket midpoints.", "histogram")
		b, c, n, sum := rebucket(h.Value.Float64Histogram(), schedBuckets)
		pw.WriteHistogram("go_sched_latencies_seconds", nil, b, c, n, sum)
	}

	var st debug.GCStats
	st.PauseQuantiles = make([]time.Duration, 5)
	debug.ReadGCStats(&st)
	pw.Header("go_gc_duration_seconds", "A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.", "summary")
	for i, q := range []string{"0", "0.25", "0.5", "0.75", "1"} {
		pw.Sample("go_gc_duration_seconds", []promtext.Label{{Name: "quantile", Value: q}}, st.PauseQuantiles[i].Seconds())
	}
	pw.Sample("go_gc_duration_seconds_sum", nil, st.PauseTotal.Seconds())
	pw.Sample("go_gc_duration_seconds_count", nil, float64(st.NumGC))

	pw.Header("go_info", "Information about the Go environment.", "gauge")
	pw.Sample("go_info", []promtext.Label{{Name: "version", Value: runtime.Version()}}, 1)
}

func sampleValue(s metrics.Sample) (float64, bool) {
	switch s.Value.Kind() {
	case metrics.KindUint64:
		return float64(s.Value.Uint64()), true
	case metrics.KindFloat64:
		return s.Value.Float64(), true
	}
	return 0, false // metric unsupported by this Go version
}

// rebucket folds a runtime histogram into coarser Prometheus buckets: a
// runtime bucket counts towards le=b when its upper edge is <= b.
func rebucket(h *metrics.Float64Histogram, bounds []float64) ([]float64, []uint64, uint64, float64) {
	out := make([]uint64, len(bounds)+1)
	var total uint64
	var sum float64
	for i, c := range h.Counts {
		lo, hi := h.Buckets[i], h.Buckets[i+1]
		total += c
		mid := hi
		switch {
		case math.IsInf(lo, -1):
			mid = math.Max(hi, 0)
		case math.IsInf(hi, 1):
			mid = lo
		default:
			mid = (lo + hi) / 2
		}
		sum += float64(c) * mid
		j := sort.SearchFloat64s(bounds, hi) // first bound >= hi
		out[j] += c
	}
	for i := 1; i < len(out); i++ {
		out[i] += out[i-1]
	}
	return append(append([]float64(nil), bounds...), math.Inf(1)), out, total, sum
}

func writeProcess(pw *promtext.Writer) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		cpu := float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
		pw.Single("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter", cpu)
	}
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			if pages, err := strconv.ParseFloat(f[1], 64); err == nil {
				pw.Single("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", pages*float64(os.Getpagesize()))
			}
		}
	}
	pw.Single("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", "gauge",
		float64(processStart.UnixNano())/1e9)
}

func (s *Server) writeHTTP(pw *promtext.Writer) {
	pw.Header("http_request_duration_seconds", "Duration of HTTP requests served, from handler entry to response written.", "histogram")
	b, c, n, sum := s.m.duration.Snapshot()
	pw.WriteHistogram("http_request_duration_seconds", []promtext.Label{{Name: "handler", Value: "/work"}}, b, c, n, sum)

	s.m.mu.Lock()
	keys := make([]codeKey, 0, len(s.m.byCode))
	for k := range s.m.byCode {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].handler != keys[j].handler {
			return keys[i].handler < keys[j].handler
		}
		return keys[i].code < keys[j].code
	})
	counts := make([]uint64, len(keys))
	for i, k := range keys {
		counts[i] = s.m.byCode[k]
	}
	errs := s.m.errors["/work"]
	s.m.mu.Unlock()

	pw.Header("http_requests_total", "HTTP requests served, by handler and status code.", "counter")
	for i, k := range keys {
		pw.Sample("http_requests_total", []promtext.Label{{Name: "handler", Value: k.handler}, {Name: "code", Value: strconv.Itoa(k.code)}}, float64(counts[i]))
	}
	pw.Header("http_request_errors_total", "HTTP requests answered with a 5xx status.", "counter")
	pw.Sample("http_request_errors_total", []promtext.Label{{Name: "handler", Value: "/work"}}, float64(errs))
}

func (s *Server) writeService(pw *promtext.Writer) {
	hits, misses, pooled := s.pool.Stats()
	pw.Single("gosvc_pool_hits_total", "Buffer requests served from the object pool.", "counter", float64(hits))
	pw.Single("gosvc_pool_misses_total", "Buffer requests that allocated a fresh buffer.", "counter", float64(misses))
	pw.Single("gosvc_pool_objects", "Buffers currently believed to be held by the object pool.", "gauge", float64(pooled))
	pw.Single("gosvc_inflight_requests", "Requests to /work currently being served.", "gauge", float64(s.m.inflight.Value()))
	pw.Single("gosvc_downstream_requests_total", "Calls made to the downstream service.", "counter", float64(s.m.downstreamRequests.Value()))
	pw.Single("gosvc_downstream_errors_total", "Downstream calls that failed or returned >= 400.", "counter", float64(s.m.downstreamErrors.Value()))
	pw.Single("gosvc_spin_iterations_per_cpu_second", "Calibrated Spin iterations per second of CPU time (converts --cpu-us and --mutex-us).", "gauge", s.itersPerUs*1e6)

	k := s.Knobs()
	pw.Single("gosvc_knob_gomaxprocs", "Current GOMAXPROCS knob.", "gauge", float64(k.GOMAXPROCS))
	pw.Single("gosvc_knob_gogc", "Current GOGC knob; -1 means GC off.", "gauge", float64(k.GOGC))
	pw.Single("gosvc_knob_gomemlimit_bytes", "Current GOMEMLIMIT knob in bytes; 0 means unlimited.", "gauge", float64(k.GOMEMLIMITBytes))
	pw.Single("gosvc_knob_object_pool_size", "Current object-pool size knob (max pooled buffers).", "gauge", float64(k.ObjectPoolSize))
	pw.Single("gosvc_knob_conn_pool_size", "Current connection-pool size knob (MaxConnsPerHost of the downstream client).", "gauge", float64(k.ConnPoolSize))
}

func writeCgroup(pw *promtext.Writer, st cgroup.CPUStats, ok bool) {
	if !ok {
		return
	}
	pw.Single("gosvc_cfs_periods_total", "CFS enforcement periods elapsed for this process's cpu cgroup.", "counter", float64(st.Periods))
	pw.Single("gosvc_cfs_throttled_periods_total", "CFS periods in which the cgroup was throttled.", "counter", float64(st.ThrottledPeriods))
	pw.Single("gosvc_cfs_throttled_seconds_total", "Total time the cgroup was throttled by CFS.", "counter", st.ThrottledSeconds)
	pw.Single("gosvc_cpu_quota_cores", "CFS quota divided by period, in cores; -1 when unlimited.", "gauge", st.QuotaCores)
}

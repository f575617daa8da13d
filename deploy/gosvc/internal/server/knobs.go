package server

import (
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

// Knobs are the runtime-tunable settings, as served by GET /admin/knobs.
// gomemlimit_bytes is 0 when there is no limit (math.MaxInt64 inside Go).
type Knobs struct {
	GOMAXPROCS      int64 `json:"gomaxprocs"`
	GOGC            int64 `json:"gogc"`
	GOMEMLIMITBytes int64 `json:"gomemlimit_bytes"`
	ObjectPoolSize  int64 `json:"object_pool_size"`
	ConnPoolSize    int64 `json:"conn_pool_size"`
}

// KnobsPatch is a partial update (PUT /admin/knobs); nil fields are unchanged.
type KnobsPatch struct {
	GOMAXPROCS      *int64 `json:"gomaxprocs"`
	GOGC            *int64 `json:"gogc"`
	GOMEMLIMITBytes *int64 `json:"gomemlimit_bytes"`
	ObjectPoolSize  *int64 `json:"object_pool_size"`
	ConnPoolSize    *int64 `json:"conn_pool_size"`
}

// KnobFields names the JSON fields, in documentation order.
var KnobFields = []string{"gomaxprocs", "gogc", "gomemlimit_bytes", "object_pool_size", "conn_pool_size"}

// MiB is the smallest memory limit accepted (besides 0, unlimited).
const MiB = 1 << 20

// RangeError reports a knob value outside its allowed range.
type RangeError struct {
	Field   string `json:"field"`
	Value   int64  `json:"value"`
	Allowed string `json:"allowed"`
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("%s=%d is out of range: allowed %s", e.Field, e.Value, e.Allowed)
}

// Validate checks every set field against its range.
func (p KnobsPatch) Validate() error {
	check := func(field string, v *int64, ok func(int64) bool, allowed string) error {
		if v != nil && !ok(*v) {
			return &RangeError{Field: field, Value: *v, Allowed: allowed}
		}
		return nil
	}
	between := func(lo, hi int64) func(int64) bool {
		return func(v int64) bool { return v >= lo && v <= hi }
	}
	for _, err := range []error{
		check("gomaxprocs", p.GOMAXPROCS, between(1, 1024), "1..1024"),
		check("gogc", p.GOGC, func(v int64) bool { return v == -1 || (v >= 1 && v <= 100000) },
			"-1 (GC off) or 1..100000"),
		check("gomemlimit_bytes", p.GOMEMLIMITBytes, func(v int64) bool { return v == 0 || v >= MiB },
			fmt.Sprintf("0 (unlimited) or >= %d (1 MiB)", MiB)),
		check("object_pool_size", p.ObjectPoolSize, between(0, 1_000_000), "0..1000000"),
		check("conn_pool_size", p.ConnPoolSize, between(1, 10000), "1..10000"),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// applyRuntime applies the Go runtime knobs of p (validated beforehand).
func applyRuntime(p KnobsPatch) {
	if p.GOMEMLIMITBytes != nil {
		limit := *p.GOMEMLIMITBytes
		if limit == 0 {
			limit = math.MaxInt64
		}
		debug.SetMemoryLimit(limit)
	}
	if p.GOGC != nil {
		debug.SetGCPercent(int(*p.GOGC))
	}
	if p.GOMAXPROCS != nil {
		runtime.GOMAXPROCS(int(*p.GOMAXPROCS))
	}
}

// readRuntimeKnobs reads the runtime's own view of its knobs, so that the
// answer reflects GOGC/GOMEMLIMIT environment variables too.
func readRuntimeKnobs() (gomaxprocs, gogc, memlimit int64) {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}, {Name: "/gc/gomemlimit:bytes"}}
	metrics.Read(s)
	gogc = int64(s[0].Value.Uint64()) // -1 (off) is stored as a wrapped uint64
	memlimit = int64(s[1].Value.Uint64())
	if memlimit == math.MaxInt64 {
		memlimit = 0
	}
	return int64(runtime.GOMAXPROCS(0)), gogc, memlimit
}

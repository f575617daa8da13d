package proxy

import (
	"fmt"
	"math"
	"math/rand"
	"sync"
	"time"
)

// Delay adds LatencyMs ± JitterMs to every proxied request before it is
// forwarded. Successive jitter draws are correlated like netem's: each uniform
// draw is Correlation % the previous one and (100 - Correlation) % fresh.
type Delay struct {
	LatencyMs   float64 `json:"latency_ms"`
	JitterMs    float64 `json:"jitter_ms"`
	Correlation float64 `json:"correlation"`
}

// Loss loses Percent % of requests. "drop" answers nothing and holds the
// connection until the client gives up (what a lost packet looks like to a
// client with a timeout); "reset" closes the client connection with a TCP RST.
type Loss struct {
	Percent     float64 `json:"percent"`
	Correlation float64 `json:"correlation"`
	Mode        string  `json:"mode"`
}

// Partition cuts Fraction (0..1) of requests off: "blackhole" holds them
// unanswered (packets silently dropped), "refuse" resets the connection.
type Partition struct {
	Fraction float64 `json:"fraction"`
	Mode     string  `json:"mode"`
}

// Bandwidth is a token bucket shared by all traffic through the proxy:
// RateBytesPerS sustained, bursts of BurstBytes, and at most LimitBytes
// waiting for tokens (0 = no limit); a request over the limit is reset.
type Bandwidth struct {
	RateBytesPerS float64 `json:"rate_bytes_per_s"`
	BurstBytes    int64   `json:"burst_bytes"`
	LimitBytes    int64   `json:"limit_bytes"`
}

// FaultSet is the active faults; nil means off. It is replaced, never mutated.
type FaultSet struct {
	Delay     *Delay     `json:"delay"`
	Loss      *Loss      `json:"loss"`
	Partition *Partition `json:"partition"`
	Bandwidth *Bandwidth `json:"bandwidth"`
}

// FaultKinds are the path names of the admin API's /faults/{kind}.
var FaultKinds = []string{"delay", "loss", "partition", "bandwidth"}

// FieldError names the offending field, its value and what is allowed.
type FieldError struct {
	Field   string
	Value   any
	Allowed string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s=%v is out of range: allowed %s", e.Field, e.Value, e.Allowed)
}

func checkRange(field string, v, lo, hi float64, allowed string) error {
	if math.IsNaN(v) || v < lo || v > hi {
		return &FieldError{Field: field, Value: v, Allowed: allowed}
	}
	return nil
}

// Validate checks the delay parameters.
func (d *Delay) Validate() error {
	if err := checkRange("latency_ms", d.LatencyMs, 0, 600000, "0..600000"); err != nil {
		return err
	}
	if err := checkRange("jitter_ms", d.JitterMs, 0, 600000, "0..600000"); err != nil {
		return err
	}
	return checkRange("correlation", d.Correlation, 0, 100, "0..100 (percent)")
}

// Validate checks the loss parameters.
func (l *Loss) Validate() error {
	if err := checkRange("percent", l.Percent, 0, 100, "0..100"); err != nil {
		return err
	}
	if err := checkRange("correlation", l.Correlation, 0, 100, "0..100 (percent)"); err != nil {
		return err
	}
	if l.Mode != "drop" && l.Mode != "reset" {
		return &FieldError{Field: "mode", Value: l.Mode, Allowed: "drop or reset"}
	}
	return nil
}

// Validate checks the partition parameters.
func (p *Partition) Validate() error {
	if err := checkRange("fraction", p.Fraction, 0, 1, "0..1"); err != nil {
		return err
	}
	if p.Mode != "blackhole" && p.Mode != "refuse" {
		return &FieldError{Field: "mode", Value: p.Mode, Allowed: "blackhole or refuse"}
	}
	return nil
}

// Validate checks the bandwidth parameters.
func (b *Bandwidth) Validate() error {
	if math.IsNaN(b.RateBytesPerS) || b.RateBytesPerS <= 0 || b.RateBytesPerS > 1e12 {
		return &FieldError{Field: "rate_bytes_per_s", Value: b.RateBytesPerS, Allowed: "> 0 and <= 1e12"}
	}
	if b.BurstBytes < 1 || b.BurstBytes > 1<<30 {
		return &FieldError{Field: "burst_bytes", Value: b.BurstBytes, Allowed: "1..1073741824"}
	}
	if b.LimitBytes < 0 {
		return &FieldError{Field: "limit_bytes", Value: b.LimitBytes, Allowed: ">= 0 (0: no limit)"}
	}
	return nil
}

// corrRand draws uniform numbers in [0, 1) where each draw keeps rho of the
// previous one (netem's correlation). Safe for concurrent use.
type corrRand struct {
	mu   sync.Mutex
	rng  *rand.Rand
	last float64
}

func newCorrRand(seed int64) *corrRand {
	return &corrRand{rng: rand.New(rand.NewSource(seed))}
}

func (c *corrRand) next(correlationPercent float64) float64 {
	rho := correlationPercent / 100
	c.mu.Lock()
	defer c.mu.Unlock()
	v := (1-rho)*c.rng.Float64() + rho*c.last
	c.last = v
	return v
}

// delayFor returns the latency one request is held for.
func (d *Delay) delayFor(r *corrRand) time.Duration {
	ms := d.LatencyMs
	if d.JitterMs > 0 {
		ms += (2*r.next(d.Correlation) - 1) * d.JitterMs
	}
	if ms <= 0 {
		return 0
	}
	return time.Duration(ms * float64(time.Millisecond))
}

// bucket is a token bucket handing out reservations: a reservation may drive
// the balance negative, and the caller waits until it would be repaid.
type bucket struct {
	mu     sync.Mutex
	cfg    Bandwidth
	tokens float64
	last   time.Time
	queued int64
}

func newBucket(cfg Bandwidth, now time.Time) *bucket {
	return &bucket{cfg: cfg, tokens: float64(cfg.BurstBytes), last: now}
}

// reserve books n bytes and returns how long to wait before sending them;
// ok is false when the bytes already waiting would exceed the queue limit.
func (b *bucket) reserve(n int64, now time.Time) (wait time.Duration, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = math.Min(float64(b.cfg.BurstBytes), b.tokens+now.Sub(b.last).Seconds()*b.cfg.RateBytesPerS)
	b.last = now
	if b.cfg.LimitBytes > 0 && b.tokens < float64(n) && b.queued+n > b.cfg.LimitBytes {
		return 0, false
	}
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0, true
	}
	b.queued += n
	return time.Duration(-b.tokens / b.cfg.RateBytesPerS * float64(time.Second)), true
}

// release returns n queued bytes once they were sent (or abandoned).
func (b *bucket) release(n int64) {
	b.mu.Lock()
	b.queued -= n
	b.mu.Unlock()
}

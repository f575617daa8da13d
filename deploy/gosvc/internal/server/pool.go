package server

import (
	"sync"
	"sync/atomic"
)

// BufPool is a sync.Pool of []byte buffers whose size is bounded by the
// object-pool-size knob. sync.Pool itself is unbounded, so a counter of pooled
// buffers caps it: a Put beyond the cap drops the buffer (garbage), and with a
// cap of 0 every Get allocates fresh. That makes the knob trade allocation
// rate (GC work) against retained memory, which is what the controller tunes.
type BufPool struct {
	pool   sync.Pool
	pooled atomic.Int64 // buffers believed to be in the pool
	limit  atomic.Int64
	hits   atomic.Uint64
	misses atomic.Uint64
}

// NewBufPool returns a pool holding at most limit buffers.
func NewBufPool(limit int64) *BufPool {
	p := &BufPool{}
	p.limit.Store(limit)
	return p
}

// SetLimit changes the cap. Shrinking takes effect as buffers are taken out.
func (p *BufPool) SetLimit(n int64) { p.limit.Store(n) }

// Limit returns the cap.
func (p *BufPool) Limit() int64 { return p.limit.Load() }

// Get returns a buffer of length n, from the pool when possible.
func (p *BufPool) Get(n int) []byte {
	if p.limit.Load() > 0 {
		if v := p.pool.Get(); v != nil {
			p.pooled.Add(-1)
			b := *(v.(*[]byte))
			if cap(b) >= n {
				p.hits.Add(1)
				return b[:n]
			}
		} else {
			// The pool is empty: the GC may have cleared it behind our back,
			// so the counter is stale. Resynchronise it.
			p.pooled.Store(0)
		}
	}
	p.misses.Add(1)
	return make([]byte, n)
}

// Put returns a buffer to the pool unless the pool is full.
func (p *BufPool) Put(b []byte) {
	if p.pooled.Add(1) > p.limit.Load() {
		p.pooled.Add(-1)
		return
	}
	p.pool.Put(&b)
}

// Stats returns hits, misses and the pooled-buffer count.
func (p *BufPool) Stats() (hits, misses uint64, pooled int64) {
	return p.hits.Load(), p.misses.Load(), max(p.pooled.Load(), 0)
}

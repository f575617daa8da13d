package loadgen

import (
	"math"
	"math/bits"
)

// Hist is an HDR-style log-linear histogram of non-negative integer values
// (nanoseconds here). Values below 256 are exact; above, each power of two is
// split into 128 linear sub-buckets, and a bucket is reported by its midpoint,
// so any quantile is within 1/256 (0.4 %) of the exact sample value.
type Hist struct {
	counts   []uint64
	n        uint64
	sum      float64
	min, max int64
}

const (
	subBits  = 7
	subCount = 1 << subBits
	// maxValue caps recorded values (about 4.9 hours in ns).
	maxValue = int64(1)<<44 - 1
)

var numBuckets = bucketOf(maxValue) + 1

// NewHist returns an empty histogram.
func NewHist() *Hist {
	return &Hist{counts: make([]uint64, numBuckets), min: math.MaxInt64}
}

func bucketOf(v int64) int {
	if v < 2*subCount {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - (subBits + 1)
	top := int(v >> shift) // in [128, 256)
	return 2*subCount + (shift-1)*subCount + top - subCount
}

// bucketRange returns the smallest and largest value of bucket idx.
func bucketRange(idx int) (lo, hi int64) {
	if idx < 2*subCount {
		return int64(idx), int64(idx)
	}
	k := idx - 2*subCount
	shift := k/subCount + 1
	top := int64(k%subCount + subCount)
	return top << shift, (top+1)<<shift - 1
}

// Record adds one value; negative values count as 0, huge ones are capped.
func (h *Hist) Record(v int64) {
	if v < 0 {
		v = 0
	}
	if v > maxValue {
		v = maxValue
	}
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += float64(v)
	if v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
}

// Count is the number of recorded values.
func (h *Hist) Count() uint64 { return h.n }

// Max is the largest recorded value (exact), 0 when empty.
func (h *Hist) Max() int64 {
	if h.n == 0 {
		return 0
	}
	return h.max
}

// Mean is the exact mean, 0 when empty.
func (h *Hist) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// Quantile returns the nearest-rank q-quantile (0 < q <= 1), 0 when empty.
func (h *Hist) Quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	if rank > h.n {
		rank = h.n
	}
	var acc uint64
	for i, c := range h.counts {
		acc += c
		if acc >= rank {
			lo, hi := bucketRange(i)
			mid := lo + (hi-lo)/2
			return min(max(mid, h.min), h.max)
		}
	}
	return h.max
}

// CountAbove returns how many recorded values are certainly greater than v
// (buckets whose lowest value exceeds v).
func (h *Hist) CountAbove(v int64) uint64 {
	var n uint64
	for i := bucketOf(min(max(v, 0), maxValue)) + 1; i < len(h.counts); i++ {
		n += h.counts[i]
	}
	return n
}

// Merge adds all of o into h.
func (h *Hist) Merge(o *Hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	if o.n > 0 {
		h.min = min(h.min, o.min)
		h.max = max(h.max, o.max)
	}
}

// Reset empties the histogram, keeping its storage.
func (h *Hist) Reset() {
	clear(h.counts)
	h.n, h.sum, h.min, h.max = 0, 0, math.MaxInt64, 0
}

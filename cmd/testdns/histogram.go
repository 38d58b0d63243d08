package main

import (
	"math"
	"math/bits"
	"time"

	"github.com/nodelocaldns/nodelocaldns/internal/dnsload"
)

// Histogram layout: latencies are recorded in whole microseconds into
// log-linear buckets, HDR style. Values below 2*subCount µs get a bucket of
// their own; above that every power of two is split into subCount equal
// buckets, so a bucket is never wider than 1/subCount (0.8 %) of its values.
// Memory is fixed (numBuckets counters, 30 KiB) whatever the run length, so
// 200 workers × any duration cost about 6 MiB in all.
const (
	subBits    = 7
	subCount   = 1 << subBits
	maxExp     = 36 // values are clamped below 2^36 µs, about 19 hours
	numBuckets = (maxExp - subBits + 1) * subCount
	maxValueUS = uint64(1)<<maxExp - 1
)

// Histogram counts latencies in log-linear buckets and tracks the exact
// minimum, maximum and sum. The zero value is not usable; use newHistogram.
// It is not safe for concurrent use: each worker owns one and they are merged
// at the end.
type Histogram struct {
	counts []uint64
	total  uint64
	sum    time.Duration
	min    time.Duration
	max    time.Duration
}

// newHistogram returns an empty histogram.
func newHistogram() *Histogram {
	return &Histogram{counts: make([]uint64, numBuckets)}
}

// bucketIndex returns the bucket that holds v microseconds.
func bucketIndex(v uint64) int {
	if v > maxValueUS {
		v = maxValueUS
	}
	if v < 2*subCount {
		return int(v)
	}
	shift := bits.Len64(v) - 1 - subBits
	return shift*subCount + int(v>>uint(shift))
}

// bucketBounds returns the smallest and largest value, in microseconds, that
// bucket i holds.
func bucketBounds(i int) (lo, hi uint64) {
	if i < 2*subCount {
		return uint64(i), uint64(i)
	}
	shift := i/subCount - 1
	m := uint64(i - shift*subCount)
	return m << uint(shift), (m+1)<<uint(shift) - 1
}

// Record adds one latency.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	if h.total == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.total++
	h.sum += d
	h.counts[bucketIndex(uint64(d/time.Microsecond))]++
}

// Merge adds every value recorded in o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.total == 0 {
		return
	}
	if h.total == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.total += o.total
	h.sum += o.sum
	for i, c := range o.counts {
		h.counts[i] += c
	}
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.total }

// Min returns the smallest recorded value, or 0 when empty.
func (h *Histogram) Min() time.Duration { return h.min }

// Max returns the largest recorded value, or 0 when empty.
func (h *Histogram) Max() time.Duration { return h.max }

// Mean returns the average of the recorded values, or 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return h.sum / time.Duration(h.total)
}

// Quantile returns the value at quantile q (0 < q <= 1): the upper bound of
// the bucket holding the ceil(q*n)-th smallest value, kept within the exact
// minimum and maximum. It returns 0 when the histogram is empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	if q <= 0 {
		return h.min
	}
	if q >= 1 {
		return h.max
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			_, hi := bucketBounds(i)
			d := time.Duration(hi)*time.Microsecond + (time.Microsecond - 1)
			return min(max(d, h.min), h.max)
		}
	}
	return h.max
}

// Buckets returns the non-empty buckets in ascending order.
func (h *Histogram) Buckets() []dnsload.Bucket {
	out := []dnsload.Bucket{}
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		lo, hi := bucketBounds(i)
		out = append(out, dnsload.Bucket{LoUS: lo, HiUS: hi, Count: c})
	}
	return out
}

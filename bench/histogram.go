package bench

import (
	"cmp"
	"slices"

	"github.com/nodelocaldns/nodelocaldns/internal/dnsload"
)

// MergeBuckets adds testdns histograms bucket by bucket (testdns buckets
// have fixed bounds, so equal bounds are the same bucket), in ascending
// order.
func MergeBuckets(hs ...[]dnsload.Bucket) []dnsload.Bucket {
	sum := map[[2]uint64]uint64{}
	for _, h := range hs {
		for _, b := range h {
			sum[[2]uint64{b.LoUS, b.HiUS}] += b.Count
		}
	}
	out := make([]dnsload.Bucket, 0, len(sum))
	for k, n := range sum {
		out = append(out, dnsload.Bucket{LoUS: k[0], HiUS: k[1], Count: n})
	}
	slices.SortFunc(out, func(a, b dnsload.Bucket) int { return cmp.Compare(a.LoUS, b.LoUS) })
	return out
}

package resilience

import (
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Defaults of a [LatencyConfig].
const (
	DefaultLatencyWindow     = 10 * time.Second
	DefaultLatencyMinSamples = 20
)

// LatencyConfig configures a [LatencyTracker].
type LatencyConfig struct {
	// Window is how long a sample counts: a quantile covers the samples of
	// the current window and of the one before it, so between one and two
	// windows of history. 0 (or negative) means DefaultLatencyWindow.
	Window time.Duration
	// MinSamples is how many samples a quantile needs: with fewer, Quantile
	// reports none. 0 (or negative) means DefaultLatencyMinSamples.
	MinSamples int
}

// The histogram's layout: log-linear, in units of 1024 ns (about a
// microsecond). Values below latSub units have a bucket each; above, each
// power of two is split into latSub buckets, so a bucket's width is at most
// 1/latSub (6.25%) of its values. latGroups powers of two reach 2^31 units,
// about 36 minutes; longer latencies fall in the last bucket.
const (
	latUnitShift = 10 // ns per unit: 1024
	latSubBits   = 4
	latSub       = 1 << latSubBits
	latGroups    = 28
	latBuckets   = latGroups * latSub
)

// latHist is one window's histogram. groups[g] is the sum of the buckets
// of group g, so that a quantile scans the groups first and the buckets of
// one group only.
type latHist struct {
	buckets [latBuckets]atomic.Uint64
	groups  [latGroups]atomic.Uint64
}

func (h *latHist) clear() {
	for i := range h.buckets {
		h.buckets[i].Store(0)
	}
	for i := range h.groups {
		h.groups[i].Store(0)
	}
}

// LatencyTracker follows the recent latency of a route, for a quantile of
// it (a hedge's delay at p95). It is a log-linear histogram of atomic
// counters (6.25% resolution) over a rotating window: three histograms, one
// that samples go to, the one before it, which quantiles read too, and one
// cleared in advance for the next window, so that a rotation never clears
// a histogram someone is writing to (except after an idle spell of two
// windows or more, when all three are stale and cleared at once: a sample
// recorded at that very moment may be lost).
//
// The time is the caller's (now arguments, from the call's clock), so
// tests move it. Record and Quantile take no lock and do not allocate. A
// LatencyTracker is safe for concurrent use; a nil one records nothing and
// has no quantile. Create one with [NewLatencyTracker].
type LatencyTracker struct {
	window     int64 // ns
	minSamples uint64
	epoch      atomic.Int64 // the window samples go to (now / window); 0 before the first
	h          [3]latHist   // window e's is h[e%3]
}

// NewLatencyTracker returns an empty tracker.
func NewLatencyTracker(cfg LatencyConfig) *LatencyTracker {
	w := cfg.Window
	if w <= 0 {
		w = DefaultLatencyWindow
	}
	n := cfg.MinSamples
	if n <= 0 {
		n = DefaultLatencyMinSamples
	}
	return &LatencyTracker{window: int64(w), minSamples: uint64(n)}
}

// epochOf returns the window of now, at least 1.
func (t *LatencyTracker) epochOf(now time.Time) int64 {
	return max(now.UnixNano()/t.window, 1)
}

// advance moves the current window to e when it is later, and returns the
// current window.
func (t *LatencyTracker) advance(e int64) int64 {
	for {
		cur := t.epoch.Load()
		if e <= cur {
			return cur
		}
		if !t.epoch.CompareAndSwap(cur, e) {
			continue
		}
		switch {
		case cur == 0:
			// The first sample: every histogram is empty.
		case e == cur+1:
			// e's histogram was cleared when cur began; e-1's (cur's)
			// stays readable; e+1's held e-2, which no one reads now.
			t.h[(e+1)%3].clear()
		default:
			for i := range t.h {
				t.h[i].clear()
			}
		}
		return e
	}
}

// Record adds a latency of d, observed at now. A negative d counts as 0.
func (t *LatencyTracker) Record(d time.Duration, now time.Time) {
	if t == nil {
		return
	}
	e := t.advance(t.epochOf(now))
	h := &t.h[e%3]
	b := latBucket(d)
	h.buckets[b].Add(1)
	h.groups[b/latSub].Add(1)
}

// latBucket returns the bucket of d.
func latBucket(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	u := uint64(d) >> latUnitShift
	if u < latSub {
		return int(u)
	}
	e := bits.Len64(u) - 1 // >= latSubBits
	g := e - latSubBits + 1
	if g >= latGroups {
		return latBuckets - 1
	}
	sub := int(u>>(e-latSubBits)) & (latSub - 1)
	return g*latSub + sub
}

// latUpper returns the upper bound of bucket b: every latency in it is
// below it.
func latUpper(b int) time.Duration {
	g, sub := b/latSub, b%latSub
	if g == 0 {
		return time.Duration(sub+1) << latUnitShift
	}
	return time.Duration(latSub+sub+1) << (g - 1 + latUnitShift)
}

// Quantile returns the q-quantile (0 < q <= 1) of the latencies recorded
// in the window of now and the one before it, as the upper bound of its
// histogram bucket (so at most 6.25% above the true value; a latency
// beyond the last bucket, about 36 minutes, counts as its bound), and true; or
// false while those windows hold fewer than MinSamples samples.
func (t *LatencyTracker) Quantile(q float64, now time.Time) (time.Duration, bool) {
	if t == nil || !(q > 0) {
		return 0, false
	}
	e := t.epochOf(now)
	cur := t.epoch.Load()
	var hs [2]*latHist
	n := 0
	for k := cur; k >= cur-1 && k > 0; k-- {
		if k >= e-1 {
			hs[n] = &t.h[k%3]
			n++
		}
	}
	var groups [latGroups]uint64
	var total uint64
	for g := range groups {
		for _, h := range hs[:n] {
			groups[g] += h.groups[g].Load()
		}
		total += groups[g]
	}
	if total < t.minSamples || total == 0 {
		return 0, false
	}
	rank := uint64(math.Ceil(min(q, 1) * float64(total)))
	rank = min(max(rank, 1), total)
	var acc uint64
	for g, c := range groups {
		if acc+c < rank {
			acc += c
			continue
		}
		last := g*latSub + latSub - 1
		for b := g * latSub; b < last; b++ {
			for _, h := range hs[:n] {
				acc += h.buckets[b].Load()
			}
			if acc >= rank {
				return latUpper(b), true
			}
		}
		// The group's last bucket, or a group whose buckets lag its
		// count (a Record between the two adds).
		return latUpper(last), true
	}
	return latUpper(latBuckets - 1), true
}

// Bounds of the quantiles a hedge accepts.
const (
	minQuantileTenths = 500
	maxQuantileTenths = 999
)

// ParseQuantile parses a quantile of the policy: "p" and a percentile
// between 50 and 99.9, with at most one decimal ("p50", "p95", "p99.9"),
// returned as a fraction (0.95).
func ParseQuantile(s string) (float64, error) {
	bad := func() (float64, error) {
		return 0, fmt.Errorf("resilience: quantile %q: want p50..p99.9, as p95 or p99.9 (two digits, one decimal at most)", s)
	}
	if len(s) < 2 || s[0] != 'p' {
		return bad()
	}
	// Tenths of a percent, from two digits, optionally a dot and one more.
	num := s[1:]
	if len(num) != 2 && (len(num) != 4 || num[2] != '.') {
		return bad()
	}
	tenths := 0
	for i := 0; i < len(num); i++ {
		if i == 2 {
			continue
		}
		c := num[i]
		if c < '0' || c > '9' {
			return bad()
		}
		tenths = tenths*10 + int(c-'0')
	}
	if len(num) == 2 {
		tenths *= 10
	}
	if tenths < minQuantileTenths || tenths > maxQuantileTenths {
		return bad()
	}
	return float64(tenths) / 1000, nil
}

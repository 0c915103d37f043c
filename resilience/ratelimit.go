package resilience

import (
	"maps"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/inmesh/inmesh/internal/clock"
)

// DefaultMaxCallers bounds the buckets of a per-caller [RateLimiter] when
// RateLimitConfig.MaxCallers is zero.
const DefaultMaxCallers = 10000

// OverflowCaller is the caller a [RateDecision] names for the callers past
// a per-caller limiter's bound, which share one bucket: a bounded value for
// telemetry.
const OverflowCaller = "_OTHER"

// rateReportEvery is how often, at most, a bucket asks for its refusals to
// be reported (RateDecision.Report).
const rateReportEvery = time.Second

// RateBucket is a token bucket of Rate tokens a second holding at most
// Burst, lock-free and without float state: the generic cell rate
// algorithm. Its one word is the "theoretical arrival time", the instant
// (in nanoseconds from the limiter's epoch) at which the bucket would be
// full again; a call at now takes a token when that instant, pushed by one
// token's interval, is at most Burst intervals ahead of now, and is one
// compare-and-swap. A refused call takes nothing and learns how long until
// a token is there.
//
// A RateBucket is made by a [RateLimiter]; it is safe for concurrent use.
type RateBucket struct {
	tat       atomic.Int64 // nanoseconds from the epoch at which the bucket is full again
	interval  int64        // nanoseconds per token; 0: the bucket never fills (a rate <= 0)
	tolerance int64        // Burst intervals
	caller    string       // what decisions of this bucket name (RateDecision.Caller)

	lastReport atomic.Int64 // nanoseconds from the epoch of the last report, -1 for none
	refused    atomic.Int64 // refusals since the last report
}

// newRateBucket returns a full bucket of rate tokens a second holding at
// most burst (at least 1). A rate that is not positive, or NaN, is a
// bucket that refuses every call; one of less than a token a day fills at
// a token a day, and one of more than a token a nanosecond at a token a
// nanosecond.
func newRateBucket(rate float64, burst int, caller string) *RateBucket {
	b := &RateBucket{caller: caller}
	b.lastReport.Store(-1)
	if !(rate > 0) {
		return b
	}
	const (
		minInterval = int64(time.Nanosecond)
		maxInterval = int64(24 * time.Hour)
	)
	iv := float64(time.Second) / rate
	switch {
	case iv < float64(minInterval):
		b.interval = minInterval
	case iv > float64(maxInterval) || math.IsNaN(iv):
		b.interval = maxInterval
	default:
		b.interval = int64(math.Round(iv))
	}
	burst = max(burst, 1)
	if int64(burst) > math.MaxInt64/4/b.interval {
		b.tolerance = math.MaxInt64 / 4 // no overflow for centuries of nanoseconds
	} else {
		b.tolerance = int64(burst) * b.interval
	}
	return b
}

// take takes a token at now (nanoseconds from the epoch, never decreasing
// by much: a clock read by concurrent calls), or reports the wait until one
// is there; a bucket that never fills reports a wait of 0.
func (b *RateBucket) take(now int64) (wait int64, ok bool) {
	if b.interval == 0 {
		return 0, false
	}
	for {
		tat := b.tat.Load()
		next := max(tat, now) + b.interval
		if ahead := next - now; ahead > b.tolerance {
			return ahead - b.tolerance, false
		}
		if b.tat.CompareAndSwap(tat, next) {
			return 0, true
		}
	}
}

// refusal counts one refusal at now and reports whether it is the first
// since the last report, made at least rateReportEvery ago, with the count
// of refusals the report covers.
func (b *RateBucket) refusal(now int64) (report bool, refused int64) {
	b.refused.Add(1)
	last := b.lastReport.Load()
	if last >= 0 && now-last < int64(rateReportEvery) {
		return false, 0
	}
	if !b.lastReport.CompareAndSwap(last, now) {
		return false, 0
	}
	return true, b.refused.Swap(0)
}

// RateLimitConfig configures a [RateLimiter].
type RateLimitConfig struct {
	// RequestsPerSecond is the rate of the shared bucket, and of each
	// caller's under PerCaller. Not positive (or NaN): every call is
	// refused.
	RequestsPerSecond float64
	// Burst is what a full bucket holds; at least 1.
	Burst int
	// PerCaller gives each caller a bucket of its own, else all callers
	// share one.
	PerCaller bool
	// Overrides give the callers they name a bucket of their own at their
	// rate, PerCaller or not, holding Burst scaled by the same factor
	// (rounded, at least 1). The map is not modified, nor kept.
	Overrides map[string]float64
	// MaxCallers bounds the per-caller buckets (those of Overrides
	// included); the callers past it share one overflow bucket, of the
	// rate and burst of one caller. 0 means DefaultMaxCallers.
	MaxCallers int
}

// Equal reports whether c and o configure the same limiter: a limiter of
// one may serve the other, its state kept.
func (c RateLimitConfig) Equal(o RateLimitConfig) bool {
	return c.RequestsPerSecond == o.RequestsPerSecond && c.Burst == o.Burst && c.PerCaller == o.PerCaller &&
		c.maxCallers() == o.maxCallers() && maps.Equal(c.Overrides, o.Overrides)
}

func (c RateLimitConfig) maxCallers() int {
	if c.MaxCallers <= 0 {
		return DefaultMaxCallers
	}
	return c.MaxCallers
}

// RateDecision is a RateLimiter's answer for one call.
type RateDecision struct {
	// Allowed is set when the call took a token.
	Allowed bool
	// Wait is, for a refused call, the time until its bucket has a token
	// (a Retry-After); 0 when it never will (a rate <= 0).
	Wait time.Duration
	// Caller names the bucket that decided, a bounded value for telemetry:
	// the caller for a bucket of its own (an override, or under
	// PerCaller), OverflowCaller for the callers past the bound, "" for
	// the bucket all callers share.
	Caller string
	// Report is set on a refusal that should be reported (logged): at
	// most one a second per bucket. Refused then counts the refusals of
	// the bucket since its last report, this one included.
	Report  bool
	Refused int64
}

// RateLimiter limits the calls a service accepts: a [RateBucket] shared
// by every caller, or one per caller (PerCaller), and one for each caller
// that Overrides names. Callers are keys ("" is one caller: those without
// a verified identity share it). The buckets of per-caller limiting are
// bounded in number (MaxCallers); the callers past the bound share one
// overflow bucket.
//
// A RateLimiter is safe for concurrent use. Allow takes no lock and
// allocates nothing for a caller it knows (the buckets are a copy-on-write
// map behind an atomic pointer); the first call of a new caller under
// PerCaller adds its bucket under a mutex, copying the map (at most
// MaxCallers entries: callers are the services of a fleet, few and
// stable).
type RateLimiter struct {
	cfg   RateLimitConfig
	clock clock.Clock
	epoch time.Time // the time the buckets count nanoseconds from

	shared   *RateBucket // every caller without a bucket of its own, when not PerCaller
	overflow *RateBucket // the callers past MaxCallers, under PerCaller
	callers  atomic.Pointer[map[string]*RateBucket]
	mu       sync.Mutex // serializes additions to callers
	max      int
}

// NewRateLimiter returns a limiter whose buckets are full, reading time
// from c (nil means clock.System).
func NewRateLimiter(cfg RateLimitConfig, c clock.Clock) *RateLimiter {
	if c == nil {
		c = clock.System{}
	}
	cfg.Overrides = maps.Clone(cfg.Overrides)
	cfg.Burst = max(cfg.Burst, 1)
	l := &RateLimiter{cfg: cfg, clock: c, epoch: c.Now(), max: cfg.maxCallers()}
	callers := make(map[string]*RateBucket, len(cfg.Overrides))
	for caller, rate := range cfg.Overrides {
		callers[caller] = newRateBucket(rate, scaledBurst(cfg.Burst, rate, cfg.RequestsPerSecond), caller)
	}
	l.callers.Store(&callers)
	if cfg.PerCaller {
		l.overflow = newRateBucket(cfg.RequestsPerSecond, cfg.Burst, OverflowCaller)
	} else {
		l.shared = newRateBucket(cfg.RequestsPerSecond, cfg.Burst, "")
	}
	return l
}

// scaledBurst is the burst of a caller whose rate overrides base: burst
// scaled by rate/base, rounded, at least 1 (burst itself when base is not
// positive).
func scaledBurst(burst int, rate, base float64) int {
	if !(base > 0) || !(rate > 0) {
		return burst
	}
	s := math.Round(float64(burst) * rate / base)
	if s > math.MaxInt32 {
		return math.MaxInt32
	}
	return max(1, int(s))
}

// Config returns the configuration of l (its Overrides must not be
// modified).
func (l *RateLimiter) Config() RateLimitConfig { return l.cfg }

// Allow decides one call of caller now, taking a token from its bucket.
func (l *RateLimiter) Allow(caller string) RateDecision {
	return l.AllowAt(caller, l.clock.Now())
}

// AllowAt is Allow at now, a time read from the limiter's clock.
func (l *RateLimiter) AllowAt(caller string, now time.Time) RateDecision {
	b := l.bucket(caller)
	ns := int64(now.Sub(l.epoch))
	wait, ok := b.take(ns)
	d := RateDecision{Allowed: ok, Caller: b.caller}
	if !ok {
		d.Wait = time.Duration(wait)
		d.Report, d.Refused = b.refusal(ns)
	}
	return d
}

// bucket returns the bucket of caller.
func (l *RateLimiter) bucket(caller string) *RateBucket {
	if b := (*l.callers.Load())[caller]; b != nil {
		return b
	}
	if !l.cfg.PerCaller {
		return l.shared
	}
	return l.add(caller)
}

// add returns the bucket of caller, a new one unless another call added it
// first, or the overflow bucket when the limiter holds its bound.
func (l *RateLimiter) add(caller string) *RateBucket {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := *l.callers.Load()
	if b := old[caller]; b != nil {
		return b
	}
	if len(old) >= l.max {
		return l.overflow
	}
	next := make(map[string]*RateBucket, len(old)+1)
	maps.Copy(next, old)
	b := newRateBucket(l.cfg.RequestsPerSecond, l.cfg.Burst, caller)
	next[caller] = b
	l.callers.Store(&next)
	return b
}

// Callers returns the number of buckets of their own that callers hold
// (overrides included).
func (l *RateLimiter) Callers() int { return len(*l.callers.Load()) }

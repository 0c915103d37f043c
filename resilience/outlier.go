package resilience

import (
	"maps"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/inmesh/inmesh/internal/clock"
)

// Outlier detection defaults, used for zero fields of OutlierConfig.
// BaseEjection and MaxEjectionPercent are the policy document's defaults.
const (
	DefaultOutlierFailures    = 5
	DefaultBaseEjection       = 30 * time.Second
	DefaultMaxEjectionPercent = 10
)

// minMaxEjection is the least cap of an ejection time: the cap is
// max(minMaxEjection, BaseEjection).
const minMaxEjection = 300 * time.Second

// OutlierConfig configures an [Outlier]. Zero (or negative) fields mean the
// Default* constants above; a MaxEjectionPercent above 100 means 100.
type OutlierConfig struct {
	// ConsecutiveFailures ejects a host after this many failures in a row.
	ConsecutiveFailures int
	// BaseEjection is the first ejection time. A host's n-th ejection lasts
	// BaseEjection*n, at most max(300s, BaseEjection). Each BaseEjection
	// that passes between the end of a host's ejection and its next one
	// forgives one earlier ejection, so a host that behaved for a while is
	// ejected for a short time again.
	BaseEjection time.Duration
	// MaxEjectionPercent bounds the hosts of the pool ejected at once to
	// floor(pool*MaxEjectionPercent/100), but at least 1 and never all of
	// them: a pool of one host never ejects it.
	MaxEjectionPercent int
	// OnEject, when not nil, is called after each ejection with the host's
	// address and the end of its ejection, on the goroutine that reported
	// the failure, without any lock held. It is for metrics and logs.
	OnEject func(addr string, until time.Time)
}

// Outlier tracks the health of one pool of endpoints (one destination) and
// ejects the hosts that fail repeatedly, for a time. Hosts are reached through
// their [HostHealth] handles. Safe for concurrent use.
type Outlier struct {
	cfg   OutlierConfig // defaults resolved
	maxEj time.Duration // ejection time cap
	clock clock.Clock

	mu   sync.Mutex // serializes pool replacements and ejection decisions
	pool atomic.Pointer[map[string]*HostHealth]
}

// NewOutlier returns an Outlier with an empty pool that reads time from c
// (nil means clock.System) for [HostHealth.EjectedUntil]; Available and
// Report take the time from their caller.
func NewOutlier(cfg OutlierConfig, c clock.Clock) *Outlier {
	if c == nil {
		c = clock.System{}
	}
	if cfg.ConsecutiveFailures <= 0 {
		cfg.ConsecutiveFailures = DefaultOutlierFailures
	}
	if cfg.BaseEjection <= 0 {
		cfg.BaseEjection = DefaultBaseEjection
	}
	if cfg.MaxEjectionPercent <= 0 {
		cfg.MaxEjectionPercent = DefaultMaxEjectionPercent
	}
	cfg.MaxEjectionPercent = min(cfg.MaxEjectionPercent, 100)
	o := &Outlier{cfg: cfg, maxEj: max(minMaxEjection, cfg.BaseEjection), clock: c}
	o.pool.Store(&map[string]*HostHealth{})
	return o
}

// Host returns the stable health handle of addr, adding addr to the pool if
// it is not in it. It is meant for when snapshots are compiled, not for each
// request.
func (o *Outlier) Host(addr string) *HostHealth {
	if h := (*o.pool.Load())[addr]; h != nil {
		return h
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	old := *o.pool.Load()
	if h := old[addr]; h != nil {
		return h
	}
	pool := maps.Clone(old)
	h := &HostHealth{o: o, addr: addr}
	pool[addr] = h
	o.pool.Store(&pool)
	return h
}

// SetPool sets the addresses of the pool, whose size bounds the hosts ejected
// at once. The handles of addresses still in it are kept, with their state;
// those of addresses no longer in it are forgotten: they keep answering but
// never eject again.
func (o *Outlier) SetPool(addrs []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	old := *o.pool.Load()
	pool := make(map[string]*HostHealth, len(addrs))
	for _, addr := range addrs {
		h := old[addr]
		if h == nil {
			h = &HostHealth{o: o, addr: addr}
		}
		pool[addr] = h
	}
	o.pool.Store(&pool)
}

// eject ejects h if it is still in the pool, not ejected, past the failure
// threshold, and the pool's ejection cap allows it.
func (o *Outlier) eject(h *HostHealth, now time.Time) {
	until, ok := o.decideEjection(h, now)
	if ok && o.cfg.OnEject != nil {
		o.cfg.OnEject(h.addr, until)
	}
}

func (o *Outlier) decideEjection(h *HostHealth, now time.Time) (time.Time, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	pool := *o.pool.Load()
	if pool[h.addr] != h || !h.Available(now) || h.failures.Load() < int64(o.cfg.ConsecutiveFailures) {
		return time.Time{}, false // forgotten, or another report decided first
	}
	limit := min(max(1, len(pool)*o.cfg.MaxEjectionPercent/100), len(pool)-1)
	ejected := 0
	for _, other := range pool {
		if !other.Available(now) {
			ejected++
		}
	}
	if ejected >= limit {
		return time.Time{}, false
	}

	base := o.cfg.BaseEjection
	times := h.timesEjected.Load()
	if times > 0 { // forgive one earlier ejection per quiet BaseEjection
		if quiet := now.UnixNano() - h.ejectedUntil.Load(); quiet > 0 {
			times = max(times-quiet/int64(base), 0)
		}
	}
	times++
	d := o.maxEj
	if times < int64(o.maxEj/base) { // base*times < maxEj: no overflow
		d = base * time.Duration(times)
	}
	until := addSaturating(now.UnixNano(), d)
	h.timesEjected.Store(times)
	h.failures.Store(0)
	h.ejectedUntil.Store(until)
	return time.Unix(0, until), true
}

// addSaturating returns the unix nanoseconds t+d, or the largest one (in
// 2262) when that overflows: an ejection too long for the clock lasts as
// long as the clock can say, rather than wrapping into the past.
func addSaturating(t int64, d time.Duration) int64 {
	if d > 0 && t > math.MaxInt64-int64(d) {
		return math.MaxInt64
	}
	return t + int64(d)
}

// HostHealth is the outlier state of one host of a pool, obtained from
// [Outlier.Host]. Safe for concurrent use. A nil *HostHealth is a host without
// outlier detection: always available.
type HostHealth struct {
	o    *Outlier
	addr string

	failures     atomic.Int64 // consecutive failures since the last success or ejection
	ejectedUntil atomic.Int64 // unix nanoseconds the last ejection ends; 0 if never ejected
	timesEjected atomic.Int64 // ejections not yet forgiven; written under o.mu
}

// Addr returns the host's address.
func (h *HostHealth) Addr() string {
	if h == nil {
		return ""
	}
	return h.addr
}

// Available reports whether the host is not ejected at now.
// HOT: one atomic load, no lock, no allocation.
func (h *HostHealth) Available(now time.Time) bool {
	return h == nil || now.UnixNano() >= h.ejectedUntil.Load()
}

// Report records how an attempt on the host ended at now, failed per
// [IsFailure]. A success resets the failure streak; the failure that reaches
// ConsecutiveFailures ejects the host if the pool's cap allows it (else the
// next failure tries again). Reports that arrive while the host is ejected
// (attempts started before) are ignored.
// HOT: lock-free and allocation-free unless the report ejects.
func (h *HostHealth) Report(failed bool, now time.Time) {
	if h == nil || !h.Available(now) {
		return
	}
	if !failed {
		if h.failures.Load() != 0 {
			h.failures.Store(0)
		}
		return
	}
	if h.failures.Add(1) >= int64(h.o.cfg.ConsecutiveFailures) {
		h.o.eject(h, now)
	}
}

// EjectedUntil returns the end of the host's current ejection, or the zero
// time when it is not ejected now (per the Outlier's clock).
func (h *HostHealth) EjectedUntil() time.Time {
	if h == nil {
		return time.Time{}
	}
	until := h.ejectedUntil.Load()
	if until == 0 || h.o.clock.Now().UnixNano() >= until {
		return time.Time{}
	}
	return time.Unix(0, until)
}

// TimesEjected returns the number of ejections that set the length of the
// host's current or last ejection (see [OutlierConfig.BaseEjection] for how
// ejections are forgiven). It is for admin pages.
func (h *HostHealth) TimesEjected() int {
	if h == nil {
		return 0
	}
	return int(h.timesEjected.Load())
}

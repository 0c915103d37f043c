package mesh

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/resilience"
)

// selfLimit returns the limiter of this workload's rate_limit block rl
// (nil: none), the one of the state in force when its configuration is the
// same, so that a policy reload that keeps the block keeps its buckets'
// state. It runs under m.mu, as compile does.
func (m *Mesh) selfLimit(rl *policy.RateLimit) *resilience.RateLimiter {
	if rl == nil {
		return nil
	}
	cfg := resilience.RateLimitConfig{RequestsPerSecond: rl.RequestsPerSecond, Burst: rl.Burst,
		PerCaller: rl.PerCaller, Overrides: rl.Overrides}
	if old := m.state.Load(); old != nil && old.limit != nil && old.limit.Config().Equal(cfg) {
		return old.limit
	}
	return resilience.NewRateLimiter(cfg, m.clock)
}

// admit decides, after its authorization, whether caller ("" without a
// verified identity: those callers share one bucket) may make one more
// call of this service under its rate_limit block. A refusal returns the
// wait until the caller's bucket has a token (0 when it never will) and
// the limit it is over, as text for the caller. admit counts the decision
// and logs a refused caller at most once a second. Without a block it
// allows at once, allocating nothing.
func (m *Mesh) admit(ctx context.Context, caller string) (wait time.Duration, limit string, limited bool) {
	l := m.state.Load().limit
	if l == nil {
		return 0, "", false
	}
	d := l.Allow(caller)
	cfg := l.Config()
	m.instr.RecordRateLimit(ctx, m.cfg.service, d.Caller, cfg.PerCaller, d.Allowed)
	if d.Allowed {
		return 0, "", false
	}
	rate, own := cfg.Overrides[caller]
	if !own {
		rate = cfg.RequestsPerSecond
	}
	if d.Report {
		m.log.Warn("caller rate limited", "caller", caller, "bucket", d.Caller, "rate", rate, "refused", d.Refused, "retry_after", d.Wait)
	}
	perSecond := strconv.FormatFloat(rate, 'g', -1, 64) + "/s"
	switch {
	case own || (cfg.PerCaller && d.Caller != resilience.OverflowCaller):
		limit = "over its rate limit of " + perSecond
	case cfg.PerCaller:
		limit = fmt.Sprintf("over the rate limit of %s that the callers past the first %d share", perSecond, l.Callers())
	default:
		limit = "over the rate limit of " + perSecond + " that its callers share"
	}
	return d.Wait, limit, true
}

// retryAfterSeconds is the Retry-After of a wait: whole seconds, rounded
// up, at least 1; 0 for no wait (a bucket that never fills).
func retryAfterSeconds(wait time.Duration) int64 {
	if wait <= 0 {
		return 0
	}
	return max(int64(math.Ceil(wait.Seconds())), 1)
}

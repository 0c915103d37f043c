package mesh

import (
	"time"

	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/internal/lograte"
)

// auditLogEvery is how often the log may say, per caller and rule, that a
// call would have been denied under authorization mode audit; the calls in
// between are counted and the next line says how many were left out.
const auditLogEvery = 10 * time.Second

// auditLimiter rate-limits the log lines of would-be denials under mode
// audit, so that a flood of calls does not flood the log: at most one line
// per auditLogEvery per (caller, rule) pair (lograte.Limiter). Its zero
// value is ready. Safe for concurrent use.
type auditLimiter struct{ l lograte.Limiter }

// allow reports whether a line about caller and rule may be logged at now,
// and how many lines of its slot were left out since its last one.
func (l *auditLimiter) allow(now time.Time, caller, rule string) (bool, int64) {
	return l.l.Allow(now, auditLogEvery, caller, rule)
}

// auditDenial logs, at Warn and rate-limited, that the call would have
// been denied by d had the authorization not been in mode audit.
func (m *Mesh) auditDenial(caller, method, path string, d identity.Decision, version string) {
	ok, suppressed := m.audit.allow(m.clock.Now(), caller, d.Name)
	if !ok {
		return
	}
	m.log.Warn("authz audit: the call would be denied; mode audit lets it through",
		"service", m.cfg.service, "caller", caller, "method", method, "path", core.PeerText(path),
		"rule", d.Name, "reason", d.Reason, "policy_version", version, "suppressed", suppressed)
}

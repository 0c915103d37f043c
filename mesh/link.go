package mesh

import (
	"context"

	"github.com/inmesh/inmesh/internal/clock"
	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/internal/meshlink"
)

// init hands the adapter packages of this module (meshgrpc) their way to
// the parts of a Mesh they need and users do not see: see package meshlink
// for why it is a function variable, set here, once.
func init() {
	meshlink.Of = func(m any) *meshlink.Plane { return m.(*Mesh).link }
	meshlink.WithClock = func(c clock.Clock) any { return optionFunc(func(cfg *config) { cfg.clock = c }) }
	meshlink.WithRand = func(r func() float64) any { return optionFunc(func(cfg *config) { cfg.rand = r }) }
}

// newLink returns the Plane of m, for its adapters.
func (m *Mesh) newLink() *meshlink.Plane {
	return &meshlink.Plane{
		Service: m.cfg.service,
		Env:     m.env,
		Tracing: m.tracing,
		State:   func() *meshlink.State { return &m.state.Load().link },
		Watch: func(ctx context.Context, fn func(*meshlink.State)) {
			m.watch(ctx, func(st *state) { fn(&st.link) })
		},
		EnsureWatched: m.ensureWatchedAll,
		FindService:   m.findService,
		ClientTLS:     m.clientTLS,
		ServerTLS:     m.ServerTLSConfig,
		Authorize: func(ctx context.Context, caller string, callerErr error, method, path string, h meshlink.Header) (bool, string) {
			return m.authorizeCall(ctx, caller, callerErr, method, path, RequestHeader{src: h.Src, get: h.Get})
		},
		RateLimit:           m.admit,
		PolicyVersionHeader: m.cfg.policyVersionHeader,
	}
}

// linkState fills st.link, the adapters' view of st (of mesh m), once st
// is complete.
func (st *state) linkState(m *Mesh) {
	st.link = meshlink.State{
		Services:      st.services,
		Endpoints:     st.endpoints,
		PolicyVersion: st.policy.Version,
		Seq:           st.seq,
		SelfPlaintext: st.selfPlaintext,
		EgressDeny:    st.egressDeny,
		Outside: func(name string) *core.CallError {
			return (*core.CallError)(st.outside(name))
		},
		Destination: func(name string) (*meshlink.State, *core.Destination) {
			cur, d := m.destination(st, name)
			return &cur.link, d
		},
	}
}

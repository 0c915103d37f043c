package mesh

import (
	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/resilience"
)

// state is one immutable view of everything the request path reads: the
// policy snapshot, the endpoints, and the destinations compiled from both
// (by the core, which owns the call). It is built off the request path,
// published through an atomic.Pointer, and never modified afterwards.
type state struct {
	policy    *policy.Snapshot
	endpoints *discovery.Snapshot
	services  map[string]*core.Destination
	self      selfAuthz // how this workload authorizes its callers
	// limit is this workload's rate limit on its callers (its own
	// service's rate_limit block), nil without one.
	limit *resilience.RateLimiter
	// selfPlaintext is set when this workload's own service says tls:
	// disable: its callers dial it in plaintext, so its gRPC server accepts
	// plaintext connections besides mTLS (package meshgrpc).
	selfPlaintext bool
	// egressDeny is set when the policy says egress: deny: a host that is
	// no service of the policy fails at layer egress instead of passing
	// through (see state.outside).
	egressDeny bool

	// seq numbers the states of a mesh in the order they were published,
	// from 1. The gRPC balancer compares the state its picker was built
	// from with a call's (package meshgrpc).
	seq uint64

	// link is the adapters' view of this state (see package meshlink),
	// filled once the state is complete, before it is published.
	link meshlink.State

	// replaced is closed when a newer state is published: a watcher that
	// read this state waits on it and then loads the new one, so no update
	// is missed and the request path never takes a lock (see Mesh.watch).
	replaced chan struct{}
}

// registry keeps the stateful parts of the data plane across compilations
// (see core.Registry). Only the compiling goroutine touches it, under
// Mesh.mu.
type registry = core.Registry

func newRegistry() *registry { return core.NewRegistry() }

// compile turns a policy snapshot and an endpoint snapshot into a state,
// carrying the stateful parts of m.reg over. It compiles the destinations
// in use (core.CompileActive): this workload's own service, and those
// compiled for the states before that pol still has; the others are
// compiled at their first call (Mesh.destination).
func (m *Mesh) compile(pol *policy.Snapshot, eps *discovery.Snapshot) *state {
	self := pol.Service(m.cfg.service)
	st := &state{policy: pol, endpoints: eps, self: compileSelfAuthz(self), replaced: make(chan struct{})}
	if self != nil {
		st.limit = m.selfLimit(self.RateLimit)
	}
	st.selfPlaintext = self != nil && core.TLSMode(&self.Effective) == core.TLSDisable
	st.egressDeny = pol.Doc.Egress == policy.EgressDeny
	st.services, m.reg = core.CompileActive(&m.env, m.reg, pol, eps, m.cfg.service)
	return st
}

// destination returns the destination of service name for a call that
// read st, and the state to make the call with: st when st compiled it,
// else (the policy has the service, but no call needed it yet) the state
// in force once it is compiled (compileMore). It returns a nil
// destination when the policy has no such service.
//
// HOT: no lock and no allocation when st compiled the destination.
func (m *Mesh) destination(st *state, name string) (*state, *core.Destination) {
	if d := st.services[name]; d != nil {
		return st, d
	}
	if st.policy.Services[name] == nil {
		return st, nil
	}
	return m.compileMore(name)
}

// compileMore compiles the destination of service name into the state in
// force, under m.mu as every compilation: it publishes a state that is the
// one in force with the destination added (its services a copy), unless
// that state has it already (a concurrent first call compiled it) or its
// policy no longer has the service (an update removed it: the destination
// is nil). The compilations after it keep the destination (it is active).
func (m *Mesh) compileMore(name string) (*state, *core.Destination) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.state.Load()
	services, d := core.CompileMore(&m.env, m.reg, cur.policy, cur.endpoints, cur.services, name)
	if d == nil || services[name] == cur.services[name] {
		return cur, d
	}
	st := &state{}
	*st = *cur
	st.services, st.seq, st.replaced = services, cur.seq+1, make(chan struct{})
	st.linkState(m)
	m.state.Store(st)
	close(cur.replaced)
	return st, d
}

// drainLimit is the bytes read from a discarded response to reuse its
// connection.
const drainLimit = 4 << 10

package meshgrpc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/mesh"
)

// BalancerName is the name of the mesh's gRPC load-balancing policy, which
// DialOptions selects through a default service config. It is registered
// with grpc-go once, when the package is initialized.
const BalancerName = "inmesh"

// serviceConfig selects the mesh's balancer for ClientConns of DialOptions.
const serviceConfig = `{"loadBalancingConfig":[{"` + BalancerName + `":{}}]}`

// pickSlot carries one attempt of a mesh RPC from the client interceptor to
// the picker, through the attempt's context, and back: the interceptor
// fills the inputs before the attempt; the picker and the pick's Done
// callback fill the outputs, which the interceptor reads once the attempt
// has ended. The outputs are atomics because grpc-go may re-pick (a
// transparent retry) on the goroutine of a stream's SendMsg or RecvMsg.
type pickSlot struct {
	// Inputs, set by the interceptor before the attempt.
	pool *core.Pool      // the subset the route and split chose
	prev *discovery.Host // the previous attempt's endpoint, avoided when possible
	// avoid, for a hedge, are the endpoints of the call's attempts in
	// flight, avoided when the subset has another.
	avoid []*discovery.Host
	now   time.Time
	seq   uint64 // the seq of the state the call's pool comes from
	// hash is the call's hash for a ring_hash or maglev pool, when hashed.
	hash   uint64
	hashed bool

	// Outputs.
	host     atomic.Pointer[discovery.Host] // the endpoint picked (or tried, when the pick failed)
	failure  atomic.Pointer[pickEntry]      // set when the pick failed: every endpoint of the pool is in transient failure
	secured  atomic.Bool                    // the picked connection is mTLS, the server proved the service's identity
	sent     atomic.Bool                    // Done: bytes were sent on the picked connection
	answered atomic.Bool                    // Done: bytes came back from the server (headers, messages or a status)
	pushback atomic.Int64                   // Done: the server's retry pushback (see pushbackOf)

	done func(balancer.DoneInfo) // s.onDone, bound once
}

// pickSlotKey is the context key of a *pickSlot.
type pickSlotKey struct{}

func newPickSlot() *pickSlot {
	s := &pickSlot{}
	s.done = s.onDone
	return s
}

// reset prepares the slot for an attempt on p (of the state numbered seq)
// at now, after one on prev.
func (s *pickSlot) reset(p *core.Pool, seq uint64, prev *discovery.Host, now time.Time) {
	s.pool, s.seq, s.prev, s.now = p, seq, prev, now
	s.hash, s.hashed = 0, false
	s.host.Store(nil)
	s.failure.Store(nil)
	s.secured.Store(false)
	s.sent.Store(false)
	s.answered.Store(false)
	s.pushback.Store(noPushback)
}

// onDone is the PickResult.Done of every pick made for the slot: the RPC on
// the picked endpoint ended (or grpc-go gave the pick back to pick again).
func (s *pickSlot) onDone(info balancer.DoneInfo) {
	if h := s.host.Load(); h != nil {
		h.End()
	}
	s.sent.Store(info.BytesSent)
	s.answered.Store(info.BytesReceived)
	s.pushback.Store(pushbackOf(info.Trailer))
}

// balancerBuilder builds the mesh's balancer for one ClientConn.
type balancerBuilder struct{}

var _ balancer.Builder = balancerBuilder{}

func (balancerBuilder) Name() string { return BalancerName }

func (balancerBuilder) Build(cc balancer.ClientConn, _ balancer.BuildOptions) balancer.Balancer {
	return &meshBalancer{cc: cc, subConns: map[string]*subConn{}}
}

// meshBalancer keeps one SubConn per endpoint the resolver reports,
// connected eagerly, and publishes a picker over them whenever one changes
// state. It does not choose endpoints itself: the picker asks the subset's
// discovery.Picker, the one the HTTP path uses, and maps the host it gives
// to its SubConn. grpc-go calls a balancer's methods and its SubConns'
// state listeners one at a time, so it needs no lock.
type meshBalancer struct {
	cc          balancer.ClientConn
	subConns    map[string]*subConn // by address
	resolverErr error
	seq         uint64 // of the mesh state the last addresses came from
	closed      bool
}

// subConn is the balancer's view of one SubConn.
type subConn struct {
	sc   balancer.SubConn
	addr string
	mtls bool
	// state is the state pickers see. It stays TransientFailure from a
	// failure until the SubConn is Ready again (sticky transient failure,
	// gRFC A62), so RPCs fail fast on a dead endpoint instead of waiting
	// through each reconnection attempt.
	state connectivity.State
	err   error // the last connection error
}

func (b *meshBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	if b.closed {
		return nil
	}
	if seq, ok := s.ResolverState.Attributes.Value(stateSeqKey{}).(uint64); ok {
		b.seq = seq
	}
	seen := make(map[string]bool, len(s.ResolverState.Endpoints))
	add := func(a resolver.Address) {
		if seen[a.Addr] {
			return
		}
		seen[a.Addr] = true
		mtls := true
		if ai := infoOf(a.Attributes); ai != nil {
			mtls = ai.mtls
		}
		if e := b.subConns[a.Addr]; e != nil {
			if e.mtls == mtls {
				return // labels may have changed: the connection has not
			}
			// The TLS mode changed: a new connection, the old one drains.
			e.sc.Shutdown()
		}
		e := &subConn{addr: a.Addr, mtls: mtls, state: connectivity.Idle}
		sc, err := b.cc.NewSubConn([]resolver.Address{a}, balancer.NewSubConnOptions{
			StateListener: func(st balancer.SubConnState) { b.updateSubConnState(e, st) },
		})
		if err != nil {
			delete(b.subConns, a.Addr)
			return
		}
		e.sc = sc
		b.subConns[a.Addr] = e
		sc.Connect()
	}
	for _, ep := range s.ResolverState.Endpoints {
		for _, a := range ep.Addresses {
			add(a)
		}
	}
	if len(s.ResolverState.Endpoints) == 0 {
		for _, a := range s.ResolverState.Addresses {
			add(a)
		}
	}
	for addr, e := range b.subConns {
		if !seen[addr] {
			e.sc.Shutdown()
			delete(b.subConns, addr)
		}
	}
	b.resolverErr = nil
	if len(b.subConns) == 0 {
		b.resolverErr = errors.New("the resolver reported no endpoints")
	}
	b.publish()
	return nil
}

func (b *meshBalancer) ResolverError(err error) {
	b.resolverErr = err
	if len(b.subConns) == 0 {
		b.publish()
	}
}

// UpdateSubConnState is not used: every SubConn has a StateListener.
func (b *meshBalancer) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {}

func (b *meshBalancer) updateSubConnState(e *subConn, st balancer.SubConnState) {
	if b.closed || b.subConns[e.addr] != e {
		return // replaced or removed: its last updates do not count
	}
	switch st.ConnectivityState {
	case connectivity.Shutdown:
		return
	case connectivity.Idle:
		e.sc.Connect() // reconnect eagerly: every endpoint may be picked
		if e.state != connectivity.TransientFailure {
			e.state = connectivity.Idle
		}
	case connectivity.Connecting:
		if e.state != connectivity.TransientFailure {
			e.state = connectivity.Connecting
		}
	case connectivity.Ready:
		e.state, e.err = connectivity.Ready, nil
	case connectivity.TransientFailure:
		e.state, e.err = connectivity.TransientFailure, st.ConnectionError
	}
	b.publish()
}

func (b *meshBalancer) ExitIdle() {
	for _, e := range b.subConns {
		e.sc.Connect()
	}
}

func (b *meshBalancer) Close() {
	b.closed = true
	for addr, e := range b.subConns {
		e.sc.Shutdown()
		delete(b.subConns, addr)
	}
}

// publish hands grpc-go a new picker over the SubConns and the aggregate
// state: Ready when one SubConn is, Connecting when one may become ready,
// TransientFailure otherwise.
func (b *meshBalancer) publish() {
	p := &picker{byAddr: make(map[string]*pickEntry, len(b.subConns)), seq: b.seq}
	pending := false
	for addr, e := range b.subConns {
		pe := &pickEntry{sc: e.sc, state: e.state, err: e.err, mtls: e.mtls}
		p.byAddr[addr] = pe
		switch e.state {
		case connectivity.Ready:
			p.ready = append(p.ready, pe)
		case connectivity.TransientFailure:
			if p.err == nil {
				p.err = e.err
			}
		default:
			pending = true
		}
	}
	state := connectivity.TransientFailure
	switch {
	case len(p.ready) > 0:
		state = connectivity.Ready
	case pending:
		state = connectivity.Connecting
	}
	if p.err == nil {
		p.err = b.resolverErr
	}
	if p.err == nil {
		p.err = errors.New("no endpoint is reachable")
	}
	p.pending = pending
	b.cc.UpdateState(balancer.State{ConnectivityState: state, Picker: p})
}

// pickEntry is one SubConn as a picker sees it, or a failure of a pick.
type pickEntry struct {
	sc    balancer.SubConn
	state connectivity.State
	err   error
	layer mesh.Layer // for a failure that is not a connection's: discovery
	mtls  bool       // the SubConn's connections are mTLS toward the service
}

// picker is an immutable view of the balancer's SubConns. Pick never
// blocks and takes no lock.
type picker struct {
	byAddr  map[string]*pickEntry
	ready   []*pickEntry // for RPCs that carry no pick slot
	next    atomic.Uint32
	pending bool   // some SubConn may become ready
	err     error  // why nothing may be ready
	seq     uint64 // of the mesh state the SubConns' addresses came from
}

var _ balancer.Picker = (*picker)(nil)

// Pick chooses the SubConn of an RPC. A mesh RPC (its context carries a
// pickSlot) goes to the endpoint the subset's load balancer picks, ejected
// endpoints skipped as on the HTTP path, or, when that endpoint's
// connection is not ready, as fallback says: another ready endpoint of the
// subset, or a wait for a new picker (ErrNoSubConnAvailable) while one may
// connect. When none can, the RPC fails with the connection error, which
// the interceptor reports as layer connect or tls. A call with a hash (a
// ring_hash or maglev route) waits instead while its own endpoint's
// connection is idle or connecting, so that a key reaches the same
// endpoint from the first call on. Another RPC is sent round robin over the
// ready SubConns.
func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	s, _ := info.Ctx.Value(pickSlotKey{}).(*pickSlot)
	if s == nil || s.pool == nil {
		return p.pickAny()
	}
	var h *discovery.Host
	switch {
	case s.avoid != nil && s.hashed:
		h = s.pool.PickAvoidingHash(s.hash, s.avoid, s.now)
	case s.avoid != nil:
		h = s.pool.PickAvoiding(s.avoid, s.now)
	}
	if h == nil {
		if s.hashed {
			h = s.pool.PickHash(s.hash, s.prev, s.now)
		} else {
			h = s.pool.Pick(s.prev, s.now)
		}
	}
	if h == nil {
		return p.pickAny()
	}
	e := p.byAddr[h.Address]
	if s.hashed && e != nil && (e.state == connectivity.Idle || e.state == connectivity.Connecting) {
		// A hashed call waits for its own endpoint's connection rather
		// than go elsewhere: the same key reaches the same endpoint from
		// the first call on (an endpoint in transient failure is left for
		// another, as below).
		return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
	}
	if e == nil || e.state != connectivity.Ready {
		tried := h
		var wait bool
		if h, e, wait = p.fallback(s.pool, s.seq, s.now); e == nil {
			s.host.Store(tried)
			if wait {
				return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
			}
			f := p.poolFailure(s.pool, tried)
			s.failure.Store(f)
			return balancer.PickResult{}, f.err
		}
	}
	s.failure.Store(nil)
	s.secured.Store(e.mtls)
	s.host.Store(h)
	h.Begin()
	return balancer.PickResult{SubConn: e.sc, Done: s.done}, nil
}

// fallback chooses for a pick whose host's SubConn is not ready, among the
// hosts of pl (of the state numbered seq), starting at a random one:
//
//   - a host that is available (not ejected) and ready;
//   - else nothing, wait set, while an available host may become ready:
//     its SubConn is idle or connecting, or the balancer has not heard of
//     it yet because the picker comes from an older state (an endpoint
//     added by a policy update that the resolver is still reporting);
//   - else a ready host even though ejected (panic mode, as the discovery
//     pickers do when every host is ejected);
//   - else nothing, wait set while any host may become ready.
//
// A host the picker's state no longer has will not become ready: waiting
// for it would block the call for good.
func (p *picker) fallback(pl *core.Pool, seq uint64, now time.Time) (h *discovery.Host, e *pickEntry, wait bool) {
	n := len(pl.Hosts)
	start := rand.IntN(n)
	var ejectedHost *discovery.Host
	var ejectedEntry *pickEntry
	pendingAvailable, pending := false, false
	for i := range n {
		h := pl.Hosts[(start+i)%n]
		e := p.byAddr[h.Address]
		available := h.Available(now)
		switch {
		case e == nil:
			if p.seq < seq {
				pending = true
				pendingAvailable = pendingAvailable || available
			}
		case e.state == connectivity.Ready:
			if available {
				return h, e, false
			}
			if ejectedEntry == nil {
				ejectedHost, ejectedEntry = h, e
			}
		case e.state != connectivity.TransientFailure:
			pending = true
			pendingAvailable = pendingAvailable || available
		}
	}
	if pendingAvailable {
		return nil, nil, true
	}
	if ejectedEntry != nil {
		return ejectedHost, ejectedEntry, false
	}
	return nil, nil, pending
}

// poolFailure returns the entry, in transient failure, of tried or else of
// another host of pl, with its connection error; every host of pl is in
// transient failure when called.
func (p *picker) poolFailure(pl *core.Pool, tried *discovery.Host) *pickEntry {
	if e := p.byAddr[tried.Address]; e != nil && e.err != nil {
		return e
	}
	known := false
	for _, h := range pl.Hosts {
		e := p.byAddr[h.Address]
		if e != nil && e.err != nil {
			return e
		}
		known = known || e != nil
	}
	if !known {
		return &pickEntry{layer: mesh.LayerDiscovery,
			err: fmt.Errorf("the endpoints of subset %q are no longer endpoints of the service (policy or catalog changed during the call)", pl.Subset)}
	}
	return &pickEntry{err: p.err}
}

// pickAny sends an RPC without a pick slot round robin over the ready
// SubConns.
func (p *picker) pickAny() (balancer.PickResult, error) {
	if n := uint32(len(p.ready)); n > 0 {
		return balancer.PickResult{SubConn: p.ready[(p.next.Add(1)-1)%n].sc}, nil
	}
	if p.pending {
		return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
	}
	return balancer.PickResult{}, p.err
}

// slotCtx is an attempt's context carrying its pick slot for the picker,
// as withPickSlot's does, but held in the call instead of allocated per
// attempt. Its Done, Err, Deadline and other values are its Context's, so
// that context.WithCancel and the like under it find their parent's
// cancelCtx as through a context.WithValue.
type slotCtx struct {
	context.Context
	slot *pickSlot
}

func (c *slotCtx) Value(key any) any {
	if _, ok := key.(pickSlotKey); ok {
		return c.slot
	}
	return c.Context.Value(key)
}

// withPickSlot returns ctx carrying s for the picker.
func withPickSlot(ctx context.Context, s *pickSlot) context.Context {
	return context.WithValue(ctx, pickSlotKey{}, s)
}

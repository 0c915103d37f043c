package meshgrpc

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"

	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/internal/meshlink"
)

// Scheme is the gRPC target scheme of mesh services: "mesh:///billing"
// names the service billing of the policy. The resolver of DialOptions
// serves it for the ClientConns dialed with those options only; nothing is
// registered globally.
const Scheme = "mesh"

// targetService returns the service a gRPC target string names and whether
// it is a mesh target: "mesh:///billing", "mesh://authority/billing",
// "mesh://billing" and "mesh:billing" all name billing, and so do
// "mesh:///Billing." and "mesh:///billing:443": the name is matched as a
// URL host is (see core.ServiceOf), the port ignored. It does not allocate for
// a target in canonical form: the client interceptors call it on every
// RPC.
func targetService(target string) (string, bool) {
	if len(target) <= len(Scheme)+1 || target[len(Scheme)] != ':' || !strings.EqualFold(target[:len(Scheme)], Scheme) {
		return "", false
	}
	rest := target[len(Scheme)+1:]
	if r, ok := strings.CutPrefix(rest, "//"); ok {
		rest = r
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			rest = rest[i+1:] // drop the authority
		}
	}
	for i := 0; i < len(rest); i++ {
		if rest[i] == '?' || rest[i] == '#' {
			rest = rest[:i]
			break
		}
	}
	rest = core.ServiceOf(rest)
	return rest, rest != ""
}

// addrInfo is what the resolver attaches to each address it reports (in
// resolver.Address.Attributes): the service the endpoint belongs to,
// whether connections to it speak mTLS, and the endpoint's labels. The
// transport credentials read it at each handshake; AddressLabels gives the
// labels. Never modified once attached.
type addrInfo struct {
	service string
	mtls    bool
	labels  map[string]string
}

// addrInfoKey is the attributes key of an *addrInfo.
type addrInfoKey struct{}

// stateSeqKey is the key, in resolver.State.Attributes, of the seq of the
// mesh state the addresses come from.
type stateSeqKey struct{}

// Equal lets attributes.Equal compare infos, whose labels are a map.
func (a *addrInfo) Equal(o any) bool {
	b, ok := o.(*addrInfo)
	return ok && a.service == b.service && a.mtls == b.mtls && maps.Equal(a.labels, b.labels)
}

func infoOf(attrs *attributes.Attributes) *addrInfo {
	ai, _ := attrs.Value(addrInfoKey{}).(*addrInfo)
	return ai
}

// AddressLabels returns the labels of the endpoint behind a resolver
// address of the mesh resolver (what the policy or the catalog says of it,
// such as version: v2), as a new map; nil for another resolver's address.
// It is for balancers and interceptors stacked on the mesh's.
func AddressLabels(addr resolver.Address) map[string]string {
	if ai := infoOf(addr.Attributes); ai != nil {
		return maps.Clone(ai.labels)
	}
	return nil
}

// resolverBuilder builds the resolver of the mesh scheme for one Mesh.
type resolverBuilder struct{ a *adapter }

var _ resolver.Builder = resolverBuilder{}

func (resolverBuilder) Scheme() string { return Scheme }

// Build starts a resolver that reports every endpoint of the target's
// service from the mesh's state, and again whenever the mesh publishes a
// new state (policy or endpoints changed) until it is closed or the mesh
// is.
func (b resolverBuilder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	service := target.Endpoint()
	if service == "" {
		service = target.URL.Host
	}
	if service = core.ServiceOf(service); service == "" {
		return nil, fmt.Errorf("meshgrpc: target %q names no service: want %s:///<service>", target.URL.String(), Scheme)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := b.a.p
	r := &meshResolver{service: service, cc: cc, cancel: cancel, ctx: ctx, p: p}
	r.wg.Go(func() {
		p.EnsureWatched(ctx, service) // with Consul: watch this destination's endpoints
		p.Watch(ctx, r.update)
	})
	return r, nil
}

// meshResolver follows the state of a mesh for one service.
type meshResolver struct {
	service string
	cc      resolver.ClientConn
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	ctx     context.Context // ended by Close
	p       *meshlink.Plane

	// Used by the watching goroutine only.
	last    []resolver.Address
	lastErr string
}

// ResolveNow does nothing: the resolver reports every change as the mesh
// publishes it.
func (*meshResolver) ResolveNow(resolver.ResolveNowOptions) {}

// Close stops the watching goroutine and waits for it.
func (r *meshResolver) Close() {
	r.cancel()
	r.wg.Wait()
}

// update reports the endpoints of r.service in st, unless they are those
// reported last.
func (r *meshResolver) update(st *meshlink.State) {
	d := st.Services[r.service]
	if d == nil {
		// A service of the policy no call needed yet: compiled now, into
		// the state in force.
		st, d = st.Destination(r.service)
	}
	if d == nil {
		err := fmt.Errorf("meshgrpc: %q is no service of policy %s", r.service, st.PolicyVersion)
		if ce := st.Outside(r.service); ce != nil {
			err = fmt.Errorf("meshgrpc: %w", ce.Err)
		}
		if err.Error() != r.lastErr {
			r.lastErr, r.last = err.Error(), nil
			r.cc.ReportError(err)
		}
		return
	}
	if d.Needs != nil && !d.NeedsWatched() {
		// A split of the service calls others: watch their endpoints
		// too; the state that brings them comes next.
		r.p.EnsureWatched(r.ctx, r.service)
	}
	eps := st.Endpoints.Endpoints(r.service)
	addrs := make([]resolver.Address, len(eps))
	for i, ep := range eps {
		addrs[i] = resolver.Address{
			Addr:       ep.Address,
			Attributes: attributes.New(addrInfoKey{}, &addrInfo{service: r.service, mtls: d.TLS == core.TLSStrict, labels: ep.Labels}),
		}
	}
	addrs = foreignAddresses(st, d, addrs)
	if r.lastErr == "" && r.last != nil && slices.EqualFunc(addrs, r.last, resolver.Address.Equal) {
		return // the balancer's picker stays as good as one built from st
	}
	r.last, r.lastErr = addrs, ""
	eps2 := make([]resolver.Endpoint, len(addrs))
	for i := range addrs {
		eps2[i] = resolver.Endpoint{Addresses: addrs[i : i+1 : i+1]}
	}
	// The error is ErrBadResolverState at most, which a watching resolver
	// may ignore: the next state is reported as soon as it is published.
	_ = r.cc.UpdateState(resolver.State{Addresses: addrs, Endpoints: eps2,
		Attributes: attributes.New(stateSeqKey{}, st.Seq)})
}

// foreignAddresses appends to addrs the endpoints of the other services
// d's splits call (core.Destination.Needs), each with its own service and
// TLS mode, so that the handshake with one proves that service's identity.
// An address already in addrs keeps its first service.
func foreignAddresses(st *meshlink.State, d *core.Destination, addrs []resolver.Address) []resolver.Address {
	for _, n := range d.Needs {
		od := st.Services[n]
		if od == nil {
			continue
		}
		for _, ep := range st.Endpoints.Endpoints(n) {
			if slices.ContainsFunc(addrs, func(a resolver.Address) bool { return a.Addr == ep.Address }) {
				continue
			}
			addrs = append(addrs, resolver.Address{
				Addr:       ep.Address,
				Attributes: attributes.New(addrInfoKey{}, &addrInfo{service: n, mtls: od.TLS == core.TLSStrict, labels: ep.Labels}),
			})
		}
	}
	return addrs
}

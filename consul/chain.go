package consul

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-bexpr"

	"github.com/inmesh/inmesh/consul/internal/blocking"
	"github.com/inmesh/inmesh/policy"
)

// A name the policy does not hold is a mesh service when Consul knows it:
// a Connect-capable instance in the catalog (Connect-native, or a
// connect-proxy for it), or a service-router, -splitter, -resolver or
// -defaults entry of that name. The service-defaults entries are watched
// whole (a workload's own UpstreamConfig is in one), so their names are
// known from the start; the others are asked at the first call to the
// name (see entryHub.find), not watched: one long poll per mesh instead of
// five, and a registration or an entry elsewhere in the datacenter wakes
// no mesh.
var findKinds = []string{api.ServiceRouter, api.ServiceSplitter, api.ServiceResolver, api.ServiceDefaults}

// findTimeout bounds the questions of a first call to a name the policy
// does not hold: a call to an outside host never waits long on Consul.
const findTimeout = time.Second

// findWait bounds the whole first call's wait on findService: the
// questions, then the snapshot that holds a name found.
const findWait = 5 * time.Second

// missTTL is how long a name Consul did not know stays outside the mesh
// before a call asks again.
const missTTL = 30 * time.Second

// maxMisses bounds the names remembered as outside the mesh.
const maxMisses = 4096

// entryHub holds what the control planes on one *api.Client share about
// config entries: Consul limits the connections of a client address, and
// each blocking query holds one, so meshes of one process that talk to
// one agent share them. It watches the service-defaults entries (their
// names, and each workload's UpstreamConfig), remembers the names Consul
// was asked about (find), and follows the compiled discovery chain of
// each destination a mesh of the client calls, from its first call, with
// its service-resolver's RequestTimeout.
type entryHub struct {
	client *api.Client
	token  string // ACL token of the queries; "": the client's own
	log    *slog.Logger
	val    value[struct{}] // the goroutines of the watches

	// misses are the names Consul did not know, with the time it said so,
	// read without a lock by calls to outside hosts; replaced, never
	// modified, under mu.
	misses atomic.Pointer[map[string]time.Time]

	mu        sync.Mutex
	refs      int
	gen       uint64                               // counts the changes
	found     map[string]bool                      // names found a mesh service at a call
	finding   map[string]chan struct{}             // the questions under way, closed when answered
	timeouts  map[string]time.Duration             // service-resolver RequestTimeout by destination
	chains    map[string]*chainPolicy              // destination -> its chain's policy; nil before the first answer
	chainRefs map[string]int                       // destination -> the meshes that follow its chain
	chainStop map[string]context.CancelFunc        // destination -> the end of its running watch
	subsets   map[string]map[string]compiledSubset // service -> subset
	subs      map[*configEntries]bool
}

var hubs = struct {
	mu sync.Mutex
	m  map[hubKey]*entryHub
}{m: map[hubKey]*entryHub{}}

// hubKey names a hub: control planes share one when they share the client
// and the token (Config.Token), since what Consul answers depends on both.
type hubKey struct {
	client *api.Client
	token  string
}

// hubOf returns the hub of client and token ("": the client's own), started
// at its first user, with one more reference.
func hubOf(client *api.Client, token string, logger *slog.Logger) *entryHub {
	hubs.mu.Lock()
	defer hubs.mu.Unlock()
	h := hubs.m[hubKey{client, token}]
	if h == nil {
		h = &entryHub{
			client:    client,
			token:     token,
			log:       logger,
			found:     map[string]bool{},
			finding:   map[string]chan struct{}{},
			timeouts:  map[string]time.Duration{},
			chains:    map[string]*chainPolicy{},
			chainRefs: map[string]int{},
			chainStop: map[string]context.CancelFunc{},
			subsets:   map[string]map[string]compiledSubset{},
			subs:      map[*configEntries]bool{},
		}
		h.misses.Store(&map[string]time.Time{})
		h.val.start()
		hubs.m[hubKey{client, token}] = h
	}
	h.refs++
	return h
}

// release drops a reference; the last stops the watches.
func (h *entryHub) release() {
	hubs.mu.Lock()
	h.refs--
	last := h.refs == 0
	if last {
		delete(hubs.m, hubKey{h.client, h.token})
	}
	hubs.mu.Unlock()
	if last {
		h.val.close()
	}
}

func (h *entryHub) subscribe(c *configEntries, on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if on {
		h.subs[c] = true
	} else {
		delete(h.subs, c)
	}
}

// subscribers returns the control planes that follow the hub.
func (h *entryHub) subscribers() []*configEntries {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Collect(maps.Keys(h.subs))
}

// changed tells every subscriber that the hub's state changed.
func (h *entryHub) changed() {
	for _, c := range h.subscribers() {
		c.poke()
	}
}

// relabel recomputes, in every subscriber's endpoint source, the subset
// labels of the instances of services.
func (h *entryHub) relabel(services []string) {
	for _, c := range h.subscribers() {
		if eps := c.endpoints.Load(); eps != nil {
			for _, svc := range services {
				eps.relabel(svc)
			}
		}
	}
}

// configEntries is the policy source of one control plane: the inmesh KV
// policy (kvWatch) with the L7 config entries of Consul applied on top,
// from its client's entryHub. Each emitted snapshot is the KV document,
// every known mesh service with at least an empty block (so that calls to
// it stay in the mesh), and each destination's block merged with what its
// config entries say (see merge): where an entry speaks, it wins.
//
// It is safe for concurrent use; Close stops it.
type configEntries struct {
	hub       *entryHub
	self      string
	kv        *kvWatch
	log       *slog.Logger
	endpoints atomic.Pointer[EndpointSource] // relabeled when subsets change

	wake      chan struct{} // cap 1: something changed
	closeOnce sync.Once
	wg        sync.WaitGroup  // the watch of this workload's service-defaults
	rejected  map[string]bool // the rejections of the last build (the Watch goroutine's)

	mu             sync.Mutex
	kvSnap         *policy.Snapshot
	kvErrs         []error
	watched        map[string]*chainReady  // the destinations whose chain this mesh follows
	present        map[string]*chainReady  // the names found a mesh service at a call: closed once in a snapshot emitted
	selfDefaults   *api.ServiceConfigEntry // this workload's service-defaults entry; nil: none
	selfKnown      bool                    // selfDefaults had its first answer (or failure)
	running        int                     // the destinations whose chain this mesh follows now
	selfStop       context.CancelFunc      // ends the watch of selfDefaults; nil: not running
	closed         bool
	lastHash       string
	lastRejected   map[string]string
	lastProvenance map[string]map[string]string
	prevSnap       *policy.Snapshot             // the snapshot built last, the next build's base
	prevProvenance map[string]map[string]string // the provenance of prevSnap's views, by service
	merged         map[string]*mergedBlock      // the merged block of each service entries speak for
}

// emptyBlock is the block of a mesh service that the KV policy has no
// block for. It is never modified: one pointer, the same at every build,
// so that the snapshot built on the last keeps the service's view.
var emptyBlock = &policy.Service{}

// mergedBlock is the block in force of a service that config entries
// speak for (see merge), kept across builds with the inputs it was merged
// from: an unchanged chain gives the same block pointer, which the next
// snapshot then copies and resolves no more (policy.NewSnapshotFrom).
type mergedBlock struct {
	// The inputs.
	kv      *policy.Service         // the KV block (nil: none)
	chain   *chainPolicy            // the chain followed (nil: none)
	timeout time.Duration           // the resolver's RequestTimeout
	self    *api.ServiceConfigEntry // this workload's service-defaults
	subsets []string                // the resolver subsets of the service, sorted

	// The merge.
	blk      *policy.Service
	from     map[string]string
	shadowed []string
	named    []string // the other services blk's splits and failover name

	// The validation of blk alone, with the defaults and the blocks of
	// the services it names that it was validated with.
	validated bool
	defaults  *policy.Service
	others    []*policy.Service
	err       error
}

// sameInputs reports whether m was merged from these inputs.
func (m *mergedBlock) sameInputs(kv *policy.Service, chain *chainPolicy, timeout time.Duration, self *api.ServiceConfigEntry, subsets map[string]compiledSubset) bool {
	if m == nil || m.kv != kv || m.chain != chain || m.self != self || len(m.subsets) != len(subsets) {
		return false
	}
	if chain != nil && chain.speaks() && m.timeout != timeout {
		return false
	}
	for _, s := range m.subsets {
		if _, ok := subsets[s]; !ok {
			return false
		}
	}
	return true
}

// validatedWith reports whether m's block was validated with these
// defaults and the current blocks of the services it names.
func (m *mergedBlock) validatedWith(defaults *policy.Service, services map[string]*policy.Service) bool {
	if !m.validated || m.defaults != defaults || len(m.others) != len(m.named) {
		return false
	}
	for i, other := range m.named {
		if services[other] != m.others[i] {
			return false
		}
	}
	return true
}

// mergeLocked merges the config entries that speak for name into its KV
// block kv; nil when none does. c.mu and c.hub.mu are held.
func (c *configEntries) mergeLocked(name string, kv *policy.Service, chain *chainPolicy, self *api.ServiceConfigEntry) *mergedBlock {
	h := c.hub
	m := &mergedBlock{kv: kv, chain: chain, timeout: h.timeouts[name], self: self}
	cp := &chainPolicy{from: map[string]string{}}
	if got := chain; got != nil {
		cp = &chainPolicy{block: got.block, from: maps.Clone(got.from)}
		if d := m.timeout; d > 0 && got.speaks() {
			cp.block.Timeout = policy.Duration(min(d, 365*24*time.Hour))
			if _, ok := cp.from[partTimeout]; !ok {
				cp.from[partTimeout] = "service-resolver/" + name
			}
		}
	}
	upstreamOf(self, name, cp)
	if sub := h.subsets[name]; len(sub) > 0 {
		// Every subset any chain names, so that a split or failover
		// to this service from another destination's chain finds them.
		subsets := maps.Clone(cp.block.Subsets)
		if subsets == nil {
			subsets = map[string]map[string]string{}
		}
		for s := range sub {
			subsets[s] = map[string]string{SubsetLabel(s): "true"}
			m.subsets = append(m.subsets, s)
		}
		slices.Sort(m.subsets)
		cp.block.Subsets = subsets
		if _, ok := cp.from[partSubsets]; !ok {
			cp.from[partSubsets] = "service-resolver/" + name
		}
	}
	if !cp.speaks() {
		return nil
	}
	m.blk, m.shadowed = merge(name, kv, cp)
	m.from = cp.from
	m.named = servicesNamed(m.blk)
	return m
}

// sameFrom reports whether two provenance maps are the same map, or both
// empty.
func sameFrom(a, b map[string]string) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// chainReady is closed once a destination's chain is in force in this mesh.
type chainReady struct {
	ch      chan struct{}
	closed  bool
	running bool // this mesh holds a reference on the hub's watch of the chain
}

// compiledSubset is a resolver subset ready to evaluate on instances.
type compiledSubset struct {
	def   api.ServiceResolverSubset
	eval  *bexpr.Evaluator // nil: every instance, unless never
	never bool             // the filter could not be read: no instance
}

var _ policy.Source = (*configEntries)(nil)

func newConfigEntries(client *api.Client, self string, kv *kvWatch, logger *slog.Logger) *configEntries {
	logger = orDefault(logger)
	c := &configEntries{
		hub:     hubOf(client, kv.token, logger),
		self:    self,
		kv:      kv,
		log:     logger,
		wake:    make(chan struct{}, 1),
		watched: map[string]*chainReady{},
		present: map[string]*chainReady{},
	}
	c.hub.subscribe(c, true)
	return c
}

func (c *configEntries) String() string { return c.kv.String() }

func (c *configEntries) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Close stops following the hub; the hub's last user stops its watches.
func (c *configEntries) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true // no watch starts after this
		if c.selfStop != nil {
			c.selfStop()
			c.selfStop = nil
		}
		c.mu.Unlock()
		c.wg.Wait()
		c.hub.subscribe(c, false)
		c.hub.release()
	})
	return nil
}

// Watch implements policy.Source. The first snapshot waits for the KV
// policy and the first answer of every name list.
func (c *configEntries) Watch(ctx context.Context, emit func(policy.Event)) error {
	var wg sync.WaitGroup
	kctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() {
		_ = c.kv.Watch(kctx, func(ev policy.Event) {
			c.mu.Lock()
			if ev.Err != nil {
				c.kvErrs = append(c.kvErrs, ev.Err)
			} else {
				c.kvSnap = ev.Snapshot
			}
			c.mu.Unlock()
			c.poke()
		})
	})
	c.poke()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.wake:
		}
		c.mu.Lock()
		errs := c.kvErrs
		c.kvErrs = nil
		snap, rejects, inForce := c.buildLocked()
		c.mu.Unlock()
		for _, err := range errs {
			emit(policy.Event{Err: err})
		}
		for _, err := range rejects {
			if !c.rejected[err.Error()] {
				emit(policy.Event{Err: err})
			}
		}
		// A chain that does not fit is reported once, not at every change.
		c.rejected = make(map[string]bool, len(rejects))
		for _, err := range rejects {
			c.rejected[err.Error()] = true
		}
		if snap != nil {
			emit(policy.Event{Snapshot: snap})
		}
		c.mu.Lock()
		for _, r := range inForce {
			if !r.closed {
				r.closed = true
				close(r.ch)
			}
		}
		c.mu.Unlock()
	}
}

// watchChain starts following the compiled discovery chain of service,
// unless this mesh follows it already, and returns a channel closed once
// its first answer is in a snapshot emitted to the mesh.
func (c *configEntries) watchChain(service string) <-chan struct{} {
	c.mu.Lock()
	r, ok := c.watched[service]
	if !ok {
		r = &chainReady{ch: make(chan struct{})}
		c.watched[service] = r
	}
	start := !r.running
	r.running = true
	if start {
		c.running++
		if c.selfStop == nil && !c.closed {
			c.startSelfDefaultsLocked()
		}
	}
	c.mu.Unlock()
	if start {
		c.hub.watchChain(service)
		c.poke() // the hub may know the chain already
	}
	return r.ch
}

// unwatchChain stops following the chain of service, whose last answer
// stays in force in this mesh, until the next watchChain.
func (c *configEntries) unwatchChain(service string) {
	c.mu.Lock()
	r, ok := c.watched[service]
	stop := ok && r.running
	if stop {
		r.running = false
		if c.running--; c.running == 0 && c.selfStop != nil {
			c.selfStop() // its last answer stays in force
			c.selfStop = nil
		}
	}
	c.mu.Unlock()
	if stop {
		c.hub.unwatchChain(service)
	}
}

// startSelfDefaultsLocked starts watching this workload's
// service-defaults entry, whose UpstreamConfig applies to its
// destinations: while it follows the chain of one, since a mesh that
// calls nothing needs none of it. c.mu is held.
func (c *configEntries) startSelfDefaultsLocked() {
	ctx, cancel := context.WithCancel(context.Background())
	c.selfStop = cancel
	c.wg.Go(func() { c.watchSelfDefaults(ctx) })
}

func (c *configEntries) watchSelfDefaults(ctx context.Context) {
	h := c.hub
	entries := h.client.ConfigEntries()
	first := true
	loop := &blocking.Loop{
		Query: func(ctx context.Context, index uint64) (blocking.Result, error) {
			q := query(&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute, AllowStale: true}, h.token).WithContext(ctx)
			e, meta, err := entries.Get(api.ServiceDefaults, c.self, q)
			switch {
			case err != nil && isNotFound(err):
				// No entry: see listedIntentions for why the list.
				e, meta, err = listedEntry(ctx, entries, h.token, api.ServiceDefaults, c.self)
				if err != nil {
					return blocking.Result{}, err
				}
			case err != nil:
				return blocking.Result{}, err
			}
			entry, _ := e.(*api.ServiceConfigEntry)
			c.setSelfDefaults(entry)
			first = false
			return blocking.Result{Index: meta.LastIndex, LastContact: meta.LastContact}, nil
		},
		OnError: func(err error, failures int, wait time.Duration) {
			if first {
				// Never hold the first call back for it: go on without.
				c.setSelfDefaults(nil)
				first = false
			}
			h.logFailure("consul service-defaults watch failed; the entry known stays in force", err, failures, wait, "service", c.self)
		},
	}
	_ = loop.Run(ctx)
}

// setSelfDefaults records an answer of this workload's service-defaults.
func (c *configEntries) setSelfDefaults(e *api.ServiceConfigEntry) {
	c.mu.Lock()
	changed := !c.selfKnown || !same(c.selfDefaults, e)
	if changed {
		// An answer that says the same keeps the entry in force, whose
		// pointer keys the merged blocks.
		c.selfDefaults = e
	}
	c.selfKnown = true
	c.mu.Unlock()
	if changed {
		c.poke()
	}
}

// findService reports whether name, which the policy in force does not
// hold, is a mesh service (see entryHub.find); when it is, a snapshot
// that holds it is in force in the mesh before it returns (or ctx ends).
// A name Consul did not know lately costs no question and takes no lock.
func (c *configEntries) findService(ctx context.Context, name string) bool {
	if c.hub.missed(name) || !policy.IsServiceName(name) {
		return false
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return false // an address names no service
	}
	ctx, cancel := context.WithTimeout(ctx, findWait)
	defer cancel()
	if !c.hub.find(ctx, name) {
		return false
	}
	c.mu.Lock()
	r, ok := c.present[name]
	if !ok {
		r = &chainReady{ch: make(chan struct{})}
		c.present[name] = r
	}
	c.mu.Unlock()
	c.poke()
	select {
	case <-r.ch:
	case <-ctx.Done():
	}
	return true
}

// buildLocked returns the snapshot of the KV document with the config
// entries applied (nil when there is none yet, or it is the one emitted
// last), the errors of the destinations whose merged block does not
// validate (their KV block stays, alone), and the chains whose first
// answer it holds. c.mu is held.
func (c *configEntries) buildLocked() (*policy.Snapshot, []error, []*chainReady) {
	h := c.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if c.kvSnap == nil {
		return nil, nil, nil
	}
	var inForce []*chainReady
	for svc, r := range c.watched {
		if h.chains[svc] != nil && c.selfKnown && !r.closed {
			inForce = append(inForce, r)
		}
	}
	for _, r := range c.present {
		if !r.closed {
			inForce = append(inForce, r) // h.found holds its name: this build does
		}
	}
	base := c.kvSnap
	doc := *base.Doc
	doc.Services = maps.Clone(base.Doc.Services)
	if doc.Services == nil {
		doc.Services = map[string]*policy.Service{}
	}
	for svc := range h.subsets {
		if _, ok := doc.Services[svc]; !ok && policy.IsServiceName(svc) && base.Rejected[svc] == "" {
			doc.Services[svc] = emptyBlock
		}
	}
	for name := range h.found {
		if _, ok := doc.Services[name]; !ok && base.Rejected[name] == "" {
			doc.Services[name] = emptyBlock
		}
	}
	// The services the chains of this mesh's destinations call are mesh
	// services: Consul compiled them into a chain.
	for svc := range c.watched {
		if got := h.chains[svc]; got != nil {
			for _, other := range servicesNamed(&got.block) {
				if _, ok := doc.Services[other]; !ok && policy.IsServiceName(other) && base.Rejected[other] == "" {
					doc.Services[other] = emptyBlock
				}
			}
		}
	}
	self := c.selfDefaults
	provenance := map[string]map[string]string{}
	shadowed := map[string][]string{}
	var errs []error
	// Only a name that a chain this mesh follows, a resolver subset or
	// this workload's upstream config speaks for can get a merged block;
	// the others keep their block as it is, at no cost.
	upstreams := self != nil && self.UpstreamConfig != nil
	var names []string
	candidate := func(name string) {
		if _, ok := doc.Services[name]; ok && base.Rejected[name] == "" {
			names = append(names, name)
		}
	}
	if upstreams {
		for name := range doc.Services {
			if base.Rejected[name] == "" {
				names = append(names, name)
			}
		}
	} else {
		// The few names chains and subsets speak for, not every service.
		for name := range c.watched {
			if h.chains[name] != nil {
				candidate(name)
			}
		}
		for name, subsets := range h.subsets {
			if _, watched := c.watched[name]; len(subsets) > 0 && !(watched && h.chains[name] != nil) {
				candidate(name)
			}
		}
	}
	slices.Sort(names)
	for name := range c.merged {
		if !slices.Contains(names, name) {
			delete(c.merged, name)
		}
	}
	if c.merged == nil {
		c.merged = map[string]*mergedBlock{}
	}
	for _, name := range names {
		kv := doc.Services[name]
		var chain *chainPolicy
		if _, ok := c.watched[name]; ok {
			chain = h.chains[name]
		}
		m := c.merged[name]
		if !m.sameInputs(kv, chain, h.timeouts[name], self, h.subsets[name]) {
			m = c.mergeLocked(name, kv, chain, self)
			if m == nil {
				delete(c.merged, name)
				continue
			}
			c.merged[name] = m
		}
		// Validated alone, with the services its splits and failover
		// name (their blocks as they stand), which validation checks.
		if !m.validatedWith(doc.Defaults, doc.Services) {
			one := policy.Document{Defaults: doc.Defaults, Services: map[string]*policy.Service{name: m.blk}}
			m.others = m.others[:0]
			for _, other := range m.named {
				b := doc.Services[other]
				m.others = append(m.others, b)
				if _, ok := one.Services[other]; !ok {
					one.Services[other] = cmp.Or(b, emptyBlock)
				}
			}
			m.defaults, m.validated = doc.Defaults, true
			m.err = nil
			if err := one.Validate(); err != nil {
				m.err = fmt.Errorf("consul: the config entries of %s (%s) do not fit the policy; its inmesh block alone applies: %w",
					name, strings.Join(slices.Compact(slices.Sorted(maps.Values(m.from))), ", "), err)
			}
		}
		if m.err != nil {
			errs = append(errs, m.err)
			continue
		}
		doc.Services[name] = m.blk
		provenance[name], shadowed[name] = m.from, m.shadowed
	}
	source := base.Source
	if len(provenance) > 0 {
		source += fmt.Sprintf("+config-entries@%d", h.gen)
	}
	snap, err := policy.NewSnapshotFrom(c.prevSnap, &doc, source)
	if err != nil {
		// Each merged block validated alone; keep the policy in force.
		return nil, append(errs, fmt.Errorf("consul: the config entries do not fit the policy: %w", err)), nil
	}
	// The views of the merged blocks name the entries. A view the last
	// snapshot holds, reused, is in force in the mesh and never changed:
	// it says the same already (its block is the same merge), else it is
	// replaced by a copy.
	// Only the views of the names of this build's or the last build's
	// provenance may say something or have to: the others are views
	// resolved anew (saying nothing) or reused from the last snapshot,
	// which set nothing on them.
	views := func(yield func(string) bool) {
		for name := range provenance {
			if !yield(name) {
				return
			}
		}
		for name := range c.prevProvenance {
			if _, ok := provenance[name]; !ok && !yield(name) {
				return
			}
		}
	}
	for name := range views {
		rs := snap.Services[name]
		from, sh := provenance[name], shadowed[name]
		if rs == nil || sameFrom(rs.Provenance, from) && slices.Equal(rs.Shadowed, sh) {
			continue
		}
		if c.prevSnap != nil && c.prevSnap.Services[name] == rs {
			cp := *rs
			rs = &cp
			snap.Services[name] = rs
		}
		rs.Provenance, rs.Shadowed = from, sh
	}
	c.prevSnap, c.prevProvenance = snap, provenance
	snap.Rejected = base.Rejected
	if snap.Hash == c.lastHash && maps.Equal(snap.Rejected, c.lastRejected) && sameProvenance(c.lastProvenance, provenance) {
		return nil, errs, inForce
	}
	c.lastHash, c.lastRejected, c.lastProvenance = snap.Hash, snap.Rejected, provenance
	return snap, errs, inForce
}

// servicesNamed lists the other services the splits and failover targets
// of blk's routes name.
func servicesNamed(blk *policy.Service) []string {
	var names []string
	for _, r := range blk.Routes {
		for _, ws := range r.Split {
			if ws.Service != "" {
				names = append(names, ws.Service)
			}
			for _, f := range ws.Failover {
				if f.Service != "" {
					names = append(names, f.Service)
				}
			}
		}
	}
	return names
}

func sameProvenance(a, b map[string]map[string]string) bool {
	return maps.EqualFunc(a, b, func(x, y map[string]string) bool { return maps.Equal(x, y) })
}

// missed reports whether Consul said lately that it does not know name.
// It takes no lock: every call to an outside host asks it.
func (h *entryHub) missed(name string) bool {
	at, ok := (*h.misses.Load())[name]
	return ok && time.Since(at) < missTTL
}

// find reports whether name is a mesh service: one the service-defaults
// entries name, one found before, or else one Consul knows now (asked
// once, without blocking, for every caller that wants it at the same
// time). A name found stays a mesh service; a name not found is asked
// again at a call after missTTL. A failed question counts as not found.
func (h *entryHub) find(ctx context.Context, name string) bool {
	h.mu.Lock()
	if h.knownLocked(name) {
		h.mu.Unlock()
		return true
	}
	if ch, ok := h.finding[name]; ok {
		h.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.knownLocked(name)
	}
	ch := make(chan struct{})
	h.finding[name] = ch
	h.mu.Unlock()

	ok := h.ask(ctx, name)

	h.mu.Lock()
	delete(h.finding, name)
	close(ch)
	if ok {
		h.found[name] = true
		h.gen++
	} else {
		now := time.Now()
		old := *h.misses.Load()
		m := make(map[string]time.Time, len(old)+1)
		for n, at := range old {
			if now.Sub(at) < missTTL && len(m) < maxMisses-1 {
				m[n] = at
			}
		}
		m[name] = now
		h.misses.Store(&m)
	}
	h.mu.Unlock()
	if ok {
		h.changed()
	}
	return ok
}

// knownLocked reports whether name is a mesh service the hub knows of;
// h.mu is held.
func (h *entryHub) knownLocked(name string) bool {
	return h.found[name] || h.subsets[name] != nil
}

// ask asks Consul, without blocking and within findTimeout, whether it
// knows name: a Connect-capable instance in the catalog, or a
// service-router, -splitter or -resolver entry.
func (h *entryHub) ask(ctx context.Context, name string) bool {
	ctx, cancel := context.WithTimeout(ctx, findTimeout)
	defer cancel()
	q := func() *api.QueryOptions { return query(&api.QueryOptions{AllowStale: true}, h.token).WithContext(ctx) }
	answers := make(chan bool, 1+len(findKinds))
	go func() {
		instances, _, err := h.client.Catalog().Connect(name, "", q())
		answers <- err == nil && len(instances) > 0
	}()
	for _, kind := range findKinds {
		go func() {
			e, _, err := h.client.ConfigEntries().Get(kind, name, q())
			answers <- err == nil && e != nil
		}()
	}
	found := false
	for range 1 + len(findKinds) {
		if <-answers {
			found = true
			cancel() // the others need not finish
		}
	}
	return found
}

func (h *entryHub) logFailure(msg string, err error, failures int, wait time.Duration, attrs ...any) {
	level := slog.LevelDebug
	if failures == 1 || failures%10 == 0 {
		level = slog.LevelWarn
	}
	h.log.Log(context.Background(), level, msg, append(attrs, "failures", failures, "retry_in", wait, "err", err)...)
}

// watchChain takes a reference on the watch of the compiled discovery
// chain of service, starting it unless it runs.
func (h *entryHub) watchChain(service string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.chainRefs[service]++
	if h.chainStop[service] != nil {
		return
	}
	if _, ok := h.chains[service]; !ok {
		h.chains[service] = nil // no answer yet
	}
	ctx, cancel := context.WithCancel(h.val.ctx)
	h.chainStop[service] = cancel
	h.val.run(func(context.Context) { h.runChain(ctx, service) })
}

// unwatchChain drops a reference on the watch of service's chain; the
// last stops it, and its last answer stays known.
func (h *entryHub) unwatchChain(service string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.chainRefs[service]--; h.chainRefs[service] > 0 {
		return
	}
	delete(h.chainRefs, service)
	if stop := h.chainStop[service]; stop != nil {
		stop()
		delete(h.chainStop, service)
	}
}

func (h *entryHub) runChain(ctx context.Context, service string) {
	loop := &blocking.Loop{
		Query: func(ctx context.Context, index uint64) (blocking.Result, error) {
			q := query(&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute, AllowStale: true}, h.token).WithContext(ctx)
			resp, meta, err := h.client.DiscoveryChain().Get(service, nil, q)
			if err != nil {
				return blocking.Result{}, err
			}
			if index == 0 || meta.LastIndex != index {
				// The compiled chain leaves the resolver's RequestTimeout
				// out: read it from the entry (the chain's index moves
				// when the entry changes).
				timeout, err := h.resolverTimeout(ctx, service)
				if err != nil {
					return blocking.Result{}, err
				}
				h.setChain(service, translateChain(service, resp.Chain), timeout)
			}
			return blocking.Result{Index: meta.LastIndex, LastContact: meta.LastContact}, nil
		},
		OnError: func(err error, failures int, wait time.Duration) {
			h.logFailure("consul discovery chain watch failed; the chain known stays in force", err, failures, wait, "service", service)
		},
	}
	_ = loop.Run(ctx)
}

// resolverTimeout reads the RequestTimeout of service's service-resolver
// entry: 0 without one.
func (h *entryHub) resolverTimeout(ctx context.Context, service string) (time.Duration, error) {
	e, _, err := h.client.ConfigEntries().Get(api.ServiceResolver, service, query(&api.QueryOptions{AllowStale: true}, h.token).WithContext(ctx))
	switch {
	case err != nil && isNotFound(err):
		return 0, nil
	case err != nil:
		return 0, err
	}
	if r, ok := e.(*api.ServiceResolverConfigEntry); ok {
		return r.RequestTimeout, nil
	}
	return 0, nil
}

// setChain records a chain's answer, and its resolver's RequestTimeout.
// The subsets it names are recorded first, and the endpoints labeled by
// them, before the policy that selects by them is emitted.
func (h *entryHub) setChain(service string, cp *chainPolicy, timeout time.Duration) {
	h.mu.Lock()
	var relabel []string
	for svc, subs := range cp.subsets {
		for name, def := range subs {
			if cur, ok := h.subsets[svc][name]; ok && cur.def == def {
				continue
			}
			cs := compiledSubset{def: def}
			if def.Filter != "" {
				eval, err := bexpr.CreateEvaluator(def.Filter)
				if err != nil {
					// Consul validated it; an instance never matches a
					// filter we cannot read.
					h.log.Warn("consul resolver subset filter not understood; the subset selects no instance",
						"service", svc, "subset", name, "filter", def.Filter, "err", err)
					cs.never = true
				} else {
					cs.eval = eval
				}
			}
			if h.subsets[svc] == nil {
				h.subsets[svc] = map[string]compiledSubset{}
			}
			h.subsets[svc][name] = cs
			relabel = append(relabel, svc)
		}
	}
	h.mu.Unlock()
	if len(relabel) > 0 {
		h.relabel(slices.Compact(slices.Sorted(slices.Values(relabel))))
	}
	h.mu.Lock()
	changed := !same(h.chains[service], cp) || h.timeouts[service] != timeout
	if changed {
		h.chains[service] = cp
		if timeout > 0 {
			h.timeouts[service] = timeout
		} else {
			delete(h.timeouts, service)
		}
		h.gen++
	}
	h.mu.Unlock()
	if changed {
		h.changed()
	}
}

// subsetLabels returns the subset labels of one instance of service.
func (h *entryHub) subsetLabels(service string, e *api.ServiceEntry, status string) map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out map[string]string
	for name, cs := range h.subsets[service] {
		if cs.never || cs.def.OnlyPassing && status != api.HealthPassing {
			continue
		}
		if cs.eval != nil {
			if ok, err := cs.eval.Evaluate(e); err != nil || !ok {
				continue
			}
		}
		if out == nil {
			out = map[string]string{}
		}
		out[SubsetLabel(name)] = "true"
	}
	return out
}

// same reports whether two answers say the same.
func same[T any](a, b T) bool { return reflect.DeepEqual(a, b) }

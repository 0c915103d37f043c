package consul

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/consul/internal/blocking"
	"github.com/inmesh/inmesh/policy"
)

// DefaultPrefix is the KV prefix of the policy in Consul.
const DefaultPrefix = "inmesh"

// The keys under the prefix that hold the policy, one block each.
const (
	keyGlobal   = "mesh"      // <prefix>/mesh: the document's egress and trust_domain
	keyDefaults = "defaults"  // <prefix>/defaults
	keyServices = "services/" // <prefix>/services/<name>
)

// kvWatch is the policy kept in Consul KV: <prefix>/mesh (the document's
// egress and trust_domain), <prefix>/defaults and one key per service,
// <prefix>/services/<name>, each YAML or JSON, watched with one blocking
// query on the prefix (Consul limits a client's connections, so never one
// per key). It is the policy.Source of the control plane.
//
// A key that does not validate is rejected on its own: its block keeps its
// last good version and the others update. A key deleted from Consul
// removes its block, but only when the KV read succeeded: errors never
// count as deletions, nor do keys the ACLs hid (an answer Consul filtered
// by ACLs counts as an error). Stale reads are allowed; the staleness of each answer
// (X-Consul-LastContact) goes to onContact.
type kvWatch struct {
	kv        *api.KV
	prefix    string
	log       *slog.Logger
	onContact func(time.Duration) // nil: none
	token     string              // ACL token of the queries; "": the Client's own
	// unresolved, for a watch whose reader (configEntries) makes its own
	// snapshot of the document: each emitted Snapshot holds only Doc
	// (validated by Assemble), Source and Rejected, and is emitted at every
	// change of the KV answer, so that a write costs one NewSnapshot, not
	// two.
	unresolved bool

	keys map[string]*keyBlock // last good block per key, for unchanged keys and rejections
	seed maphash.Seed         // of keyBlock.sum
	last *policy.Document     // the document last emitted
	bad  map[string]uint64    // rejected keys and the ModifyIndex rejected, so a rejection is emitted once

	// dir and servicesDir are prefix+"/" and prefix+"/"+keyServices, made
	// once rather than for each key of each answer.
	dir, servicesDir string
	// answer counts the answers applied; keyBlock.seen holds the last
	// that held the key.
	answer uint64
	// services is the map of service blocks of an answer, cleared and
	// reused at the next (Assemble copies it).
	services map[string]*policy.Service
	// lastSnap is the snapshot built last, the next build's base (when
	// not unresolved).
	lastSnap *policy.Snapshot

	// lastRejected and lastHash are the Rejected and Hash of the
	// snapshot last emitted.
	lastRejected map[string]string
	lastHash     string
}

var _ policy.Source = (*kvWatch)(nil)

// keyBlock is the parsed block of one key at one ModifyIndex and value.
// The value is compared too, by its length and a 64-bit hash: a restarted
// or restored Consul starts its indexes again, so an index alone can name
// two different values. (Keeping the hash rather than the value saves
// comparing every unchanged value of every answer, and its copy.)
type keyBlock struct {
	modify uint64
	create uint64
	size   int
	sum    uint64          // maphash of the value
	block  *policy.Service // a service or the defaults
	global *policy.Global  // the key <prefix>/mesh
	seen   uint64          // the last answer that held the key (kvWatch.answer)
}

// newKVWatch returns the source of the policy under prefix ("" means
// DefaultPrefix).
func newKVWatch(client *api.Client, prefix string, logger *slog.Logger, onContact func(time.Duration)) *kvWatch {
	prefix = cleanPrefix(prefix)
	return &kvWatch{
		kv:          client.KV(),
		prefix:      prefix,
		dir:         prefix + "/",
		servicesDir: prefix + "/" + keyServices,
		log:         orDefault(logger),
		onContact:   onContact,
		keys:        map[string]*keyBlock{},
		seed:        maphash.MakeSeed(),
		bad:         map[string]uint64{},
		services:    map[string]*policy.Service{},
	}
}

// cleanPrefix is prefix without a trailing slash, DefaultPrefix for "".
func cleanPrefix(prefix string) string {
	if prefix == "" {
		return DefaultPrefix
	}
	return strings.TrimSuffix(prefix, "/")
}

func (s *kvWatch) String() string { return "consul:" + s.prefix }

// Watch implements policy.Source.
func (s *kvWatch) Watch(ctx context.Context, emit func(policy.Event)) error {
	loop := &blocking.Loop{
		Query: func(ctx context.Context, index uint64) (blocking.Result, error) {
			q := query(&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute, AllowStale: true}, s.token).WithContext(ctx)
			pairs, meta, err := s.kv.List(s.dir, q)
			if err != nil {
				return blocking.Result{}, err
			}
			if meta.ResultsFilteredByACLs {
				// Consul hid keys the token may not read: the answer is
				// not the policy, and keys missing from it are no
				// deletions. A revoked or narrowed token keeps the
				// policy in force, and the error names the rule.
				return blocking.Result{}, &ACLError{Rule: keyRule(s.prefix), Access: "read", For: "the policy under " + s.prefix + "/",
					Err: errors.New("Consul filtered the KV list by ACLs (X-Consul-Results-Filtered-By-ACLs)")}
			}
			if s.onContact != nil {
				s.onContact(meta.LastContact)
			}
			if index == 0 || meta.LastIndex != index {
				s.apply(pairs, meta.LastIndex, emit)
			}
			return blocking.Result{Index: meta.LastIndex, LastContact: meta.LastContact}, nil
		},
		OnError: func(err error, failures int, wait time.Duration) {
			level := slog.LevelDebug
			if failures == 1 || failures%10 == 0 {
				level = slog.LevelWarn
			}
			s.log.Log(context.Background(), level, "consul KV watch failed; the policy in force stays",
				"prefix", s.prefix, "failures", failures, "retry_in", wait, "err", err)
		},
	}
	return loop.Run(ctx)
}

// apply turns one answer of the KV list into events.
func (s *kvWatch) apply(pairs api.KVPairs, index uint64, emit func(policy.Event)) {
	s.answer++
	var blocks policy.Blocks
	clear(s.services)
	blocks.Services = s.services
	// unusable holds the services whose key holds no valid block, with
	// the reason: the snapshot names them in Rejected, so that a mesh
	// fails their calls instead of taking them for outside hosts.
	var unusable map[string]string
	held := 0 // the keys of s.keys the answer holds
	for _, p := range pairs {
		kind, name := s.keyKind(p.Key)
		if kind == "" {
			if !strings.HasSuffix(p.Key, "/") { // folders are fine
				s.log.Debug("ignoring a KV key that is no policy block", "key", p.Key)
			}
			continue
		}
		kb, err := s.parse(p, kind, name)
		if err != nil {
			err = fmt.Errorf("consul key %s (modify index %d): %w", p.Key, p.ModifyIndex, err)
			if s.bad[p.Key] != p.ModifyIndex || p.ModifyIndex == 0 {
				s.bad[p.Key] = p.ModifyIndex
				emit(policy.Event{Err: err})
			}
			prev, ok := s.keys[p.Key]
			if !ok {
				// Never valid: the service has no policy, but it is known.
				if kind == keyServices {
					if unusable == nil {
						unusable = map[string]string{}
					}
					unusable[name] = err.Error()
				}
				continue
			}
			kb = prev
		} else if len(s.bad) > 0 {
			delete(s.bad, p.Key)
		}
		if kb.seen != s.answer {
			kb.seen = s.answer
			held++
		}
		switch kind {
		case keyGlobal:
			blocks.Global = kb.global
		case keyDefaults:
			blocks.Defaults = kb.block
		default:
			blocks.Services[name] = kb.block
		}
	}
	if held < len(s.keys) {
		for key, kb := range s.keys {
			if kb.seen != s.answer {
				delete(s.keys, key) // deleted in Consul, read successfully
			}
		}
	}

	doc, rejected := blocks.Assemble(s.last)
	reasons := make(map[string]string, len(rejected))
	for block, err := range rejected {
		key := s.keyOf(block, blocks.Services)
		err = fmt.Errorf("consul key %s (index %d): does not fit the policy: %w", key, index, err)
		reasons[block] = err.Error()
		emit(policy.Event{Err: err})
	}
	if doc == nil {
		return
	}
	// A block Assemble dropped without an earlier version leaves its
	// service known but without a policy, as a key that does not parse.
	if len(doc.Services) < len(blocks.Services) || len(rejected) > 0 {
		for name := range blocks.Services {
			if _, ok := doc.Services[name]; !ok {
				if unusable == nil {
					unusable = map[string]string{}
				}
				unusable[name] = cmp.Or(reasons[policy.ServicePath(name)], "its block does not fit the policy")
			}
		}
	}
	if s.unresolved {
		s.last = doc
		emit(policy.Event{Snapshot: &policy.Snapshot{Doc: doc, Source: fmt.Sprintf("%s@%d", s, index), Rejected: unusable}})
		return
	}
	snap, err := policy.NewSnapshotFrom(s.lastSnap, doc, fmt.Sprintf("%s@%d", s, index))
	if err != nil { // Assemble returned a validated document; keep the path safe anyway
		emit(policy.Event{Err: fmt.Errorf("consul %s (index %d): %w", s.prefix, index, err)})
		return
	}
	s.lastSnap = snap
	snap.Rejected = unusable
	if s.last != nil && s.lastHash == snap.Hash && maps.Equal(s.lastRejected, snap.Rejected) {
		return
	}
	s.last, s.lastHash, s.lastRejected = snap.Doc, snap.Hash, snap.Rejected
	emit(policy.Event{Snapshot: snap})
}

// keyKind names the block a key holds: keyGlobal, keyDefaults or
// keyServices with the service's name; "" for a key that holds none.
func (s *kvWatch) keyKind(key string) (kind, name string) {
	rest, ok := strings.CutPrefix(key, s.dir)
	if !ok {
		return "", ""
	}
	if rest == keyGlobal || rest == keyDefaults {
		return rest, ""
	}
	name, ok = strings.CutPrefix(rest, keyServices)
	if !ok || !policy.IsServiceName(name) {
		return "", ""
	}
	return keyServices, name
}

// keyOf returns the key of a block path of Assemble.
func (s *kvWatch) keyOf(block string, services map[string]*policy.Service) string {
	for name := range services {
		if policy.ServicePath(name) == block {
			return s.servicesDir + name
		}
	}
	return s.dir + block
}

// parse returns the block of one pair, reusing the last parse of an
// unchanged key. kind and name are keyKind's.
func (s *kvWatch) parse(p *api.KVPair, kind, name string) (*keyBlock, error) {
	sum := maphash.Bytes(s.seed, p.Value)
	if kb, ok := s.keys[p.Key]; ok && kb.modify == p.ModifyIndex && kb.create == p.CreateIndex && kb.size == len(p.Value) && kb.sum == sum {
		return kb, nil
	}
	kb := &keyBlock{modify: p.ModifyIndex, create: p.CreateIndex, size: len(p.Value), sum: sum}
	var err error
	switch kind {
	case keyGlobal:
		kb.global, err = policy.ParseGlobal(p.Value)
	case keyDefaults:
		kb.block, err = policy.ParseService(p.Value, keyDefaults)
	default:
		kb.block, err = policy.ParseService(p.Value, policy.ServicePath(name))
	}
	if err != nil {
		return nil, err
	}
	s.keys[p.Key] = kb
	return kb, nil
}

// blockPath maps a key to the path of its block: "mesh" (the global
// block), "defaults" or the path of a service ("services.billing"). Other
// keys are not policy blocks.
func (s *kvWatch) blockPath(key string) (string, bool) {
	return blockPath(s.prefix, key)
}

func blockPath(prefix, key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, prefix+"/")
	if !ok {
		return "", false
	}
	if rest == keyGlobal || rest == keyDefaults {
		return rest, true
	}
	name, ok := strings.CutPrefix(rest, keyServices)
	if !ok || !policy.IsServiceName(name) {
		return "", false
	}
	return policy.ServicePath(name), true
}

// IsPolicyKey reports whether key holds a block of the policy under prefix
// ("" means DefaultPrefix): <prefix>/mesh, <prefix>/defaults or
// <prefix>/services/<name>. `inmesh push` removes the policy keys it does
// not write.
func IsPolicyKey(key, prefix string) bool {
	_, ok := blockPath(cleanPrefix(prefix), key)
	return ok
}

// Keys splits a document into the KV pairs that hold it under prefix ("" means
// DefaultPrefix): <prefix>/mesh when the document sets egress or
// trust_domain, <prefix>/defaults and one <prefix>/services/<name> per
// service, each value the block as JSON. The version label is not kept:
// with Consul, the version is the content hash. [FromKeys] reads the keys
// back.
func Keys(doc *policy.Document, prefix string) (map[string][]byte, error) {
	if doc == nil {
		return nil, errors.New("consul: Keys: no document")
	}
	if err := doc.Validate(); err != nil {
		return nil, err
	}
	prefix = cleanPrefix(prefix)
	out := map[string][]byte{}
	if g := policy.GlobalOf(doc); g != nil {
		b, err := json.MarshalIndent(g, "", "  ")
		if err != nil {
			return nil, err
		}
		out[prefix+"/"+keyGlobal] = b
	}
	if doc.Defaults != nil {
		b, err := marshalBlock(doc.Defaults)
		if err != nil {
			return nil, err
		}
		out[prefix+"/"+keyDefaults] = b
	}
	for _, name := range slices.Sorted(maps.Keys(doc.Services)) {
		b, err := marshalBlock(doc.Services[name])
		if err != nil {
			return nil, err
		}
		out[prefix+"/"+keyServices+name] = b
	}
	return out, nil
}

// FromKeys assembles the document that the policy keys among keys hold
// under prefix ("" means DefaultPrefix); other keys are ignored. Unlike a
// mesh, which keeps the last good version of a bad key, it fails when any
// key does not validate, naming every such key.
func FromKeys(keys map[string][]byte, prefix string) (*policy.Document, error) {
	prefix = cleanPrefix(prefix)
	blocks := policy.Blocks{Services: map[string]*policy.Service{}}
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(keys)) {
		path, ok := blockPath(prefix, key)
		if !ok {
			continue
		}
		var err error
		switch path {
		case keyGlobal:
			blocks.Global, err = policy.ParseGlobal(keys[key])
		case keyDefaults:
			blocks.Defaults, err = policy.ParseService(keys[key], path)
		default:
			name := strings.TrimPrefix(key, prefix+"/"+keyServices)
			blocks.Services[name], err = policy.ParseService(keys[key], path)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
	}
	doc, rejected := blocks.Assemble(nil)
	for _, block := range slices.Sorted(maps.Keys(rejected)) {
		errs = append(errs, fmt.Errorf("%s: %w", block, rejected[block]))
	}
	if len(errs) > 0 || doc == nil {
		return nil, fmt.Errorf("consul: the policy under %s/ does not validate:\n%w", prefix, errors.Join(errs...))
	}
	return doc, nil
}

// marshalBlock renders one block as indented JSON, the form `inmesh get`
// reads back.
func marshalBlock(s *policy.Service) ([]byte, error) {
	return json.MarshalIndent(s, "", "  ")
}

package policy

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/internal/blocking"
)

// DefaultConsulPrefix is the KV prefix of the policy in Consul.
const DefaultConsulPrefix = "inmesh"

// ConsulSource is the policy kept in Consul KV, one key per service:
// <prefix>/services/<name> and <prefix>/defaults, YAML or JSON, watched with
// one blocking query on the prefix (Consul limits a client's connections,
// so never one per key). It implements Source.
//
// A key that does not validate is rejected on its own: its service keeps
// its last good block and the others update. A key deleted from Consul
// removes its service, but only when the KV read succeeded: errors never
// count as deletions. Stale reads are allowed; the staleness of each answer
// (X-Consul-LastContact) goes to OnContact.
type ConsulSource struct {
	kv     *api.KV
	prefix string
	log    *slog.Logger
	// OnContact, when set, receives the last-contact time of every answer.
	OnContact func(time.Duration)

	keys map[string]keyBlock // last good block per key, for unchanged keys and rejections
	last *Document           // the document last emitted
	bad  map[string]uint64   // rejected keys and the ModifyIndex rejected, so a rejection is emitted once

	// lastRejected is the Rejected of the snapshot last emitted.
	lastRejected map[string]string
}

// keyBlock is the parsed block of one key at one ModifyIndex and value.
// The value is compared too: a restarted or restored Consul starts its
// indexes again, so an index alone can name two different values.
type keyBlock struct {
	modify uint64
	value  []byte
	block  *Service
}

// NewConsulSource returns the source of the policy under prefix ("" means
// DefaultConsulPrefix) in the Consul that client talks to. A nil logger
// means slog.Default().
func NewConsulSource(client *api.Client, prefix string, logger *slog.Logger) *ConsulSource {
	if prefix == "" {
		prefix = DefaultConsulPrefix
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &ConsulSource{
		kv:     client.KV(),
		prefix: strings.TrimSuffix(prefix, "/"),
		log:    logger,
		keys:   map[string]keyBlock{},
		bad:    map[string]uint64{},
	}
}

func (s *ConsulSource) String() string { return "consul:" + s.prefix }

// Watch implements Source.
func (s *ConsulSource) Watch(ctx context.Context, emit func(Event)) error {
	loop := &blocking.Loop{
		Query: func(ctx context.Context, index uint64) (blocking.Result, error) {
			q := (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute, AllowStale: true}).WithContext(ctx)
			pairs, meta, err := s.kv.List(s.prefix+"/", q)
			if err != nil {
				return blocking.Result{}, err
			}
			if s.OnContact != nil {
				s.OnContact(meta.LastContact)
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
			s.log.Log(context.Background(), level, "inmesh: consul KV watch failed; the policy in force stays",
				"prefix", s.prefix, "failures", failures, "retry_in", wait, "err", err)
		},
	}
	return loop.Run(ctx)
}

// apply turns one answer of the KV list into events.
func (s *ConsulSource) apply(pairs api.KVPairs, index uint64, emit func(Event)) {
	var blocks Blocks
	blocks.Services = map[string]*Service{}
	// unusable holds the services whose key holds no valid block, with
	// the reason: the snapshot names them in Rejected, so that a mesh
	// fails their calls instead of taking them for outside hosts.
	unusable := map[string]string{}
	seen := map[string]bool{}
	keyOf := map[string]string{} // block path -> key
	for _, p := range pairs {
		path, ok := s.blockPath(p.Key)
		if !ok {
			if !strings.HasSuffix(p.Key, "/") { // folders are fine
				s.log.Debug("inmesh: ignoring a KV key that is no policy block", "key", p.Key)
			}
			continue
		}
		seen[p.Key] = true
		keyOf[path] = p.Key
		block, err := s.parse(p, path)
		if err != nil {
			err = fmt.Errorf("consul key %s (modify index %d): %w", p.Key, p.ModifyIndex, err)
			if s.bad[p.Key] != p.ModifyIndex || p.ModifyIndex == 0 {
				s.bad[p.Key] = p.ModifyIndex
				emit(Event{Err: err})
			}
			prev, ok := s.keys[p.Key]
			if !ok {
				// Never valid: the service has no policy, but it is known.
				if path != "defaults" {
					unusable[strings.TrimPrefix(p.Key, s.prefix+"/services/")] = err.Error()
				}
				continue
			}
			block = prev.block
		} else {
			delete(s.bad, p.Key)
		}
		if path == "defaults" {
			blocks.Defaults = block
		} else {
			blocks.Services[strings.TrimPrefix(p.Key, s.prefix+"/services/")] = block
		}
	}
	for key := range s.keys {
		if !seen[key] {
			delete(s.keys, key) // deleted in Consul, read successfully
		}
	}

	doc, rejected := blocks.Assemble(s.last)
	reasons := make(map[string]string, len(rejected))
	for block, err := range rejected {
		key := keyOf[block]
		if key == "" {
			key = s.prefix + "/" + block
		}
		err = fmt.Errorf("consul key %s (index %d): does not fit the policy: %w", key, index, err)
		reasons[block] = err.Error()
		emit(Event{Err: err})
	}
	if doc == nil {
		return
	}
	// A block Assemble dropped without an earlier version leaves its
	// service known but without a policy, as a key that does not parse.
	for name := range blocks.Services {
		if _, ok := doc.Services[name]; !ok {
			unusable[name] = cmp.Or(reasons[join("services", name)], "its block does not fit the policy")
		}
	}
	snap, err := NewSnapshot(doc, fmt.Sprintf("%s@%d", s, index))
	if err != nil { // Assemble returned a validated document; keep the path safe anyway
		emit(Event{Err: fmt.Errorf("consul %s (index %d): %w", s.prefix, index, err)})
		return
	}
	if len(unusable) > 0 {
		snap.Rejected = unusable
	}
	if s.last != nil && sameHash(s.last, snap) && maps.Equal(s.lastRejected, snap.Rejected) {
		return
	}
	s.last, s.lastRejected = snap.Doc, snap.Rejected
	emit(Event{Snapshot: snap})
}

// parse returns the block of one pair, reusing the last parse of an
// unchanged key.
func (s *ConsulSource) parse(p *api.KVPair, path string) (*Service, error) {
	if kb, ok := s.keys[p.Key]; ok && kb.modify == p.ModifyIndex && bytes.Equal(kb.value, p.Value) {
		return kb.block, nil
	}
	block, err := ParseService(p.Value, path)
	if err != nil {
		return nil, err
	}
	s.keys[p.Key] = keyBlock{modify: p.ModifyIndex, value: bytes.Clone(p.Value), block: block}
	return block, nil
}

// blockPath maps a key to the path of its block: "defaults" or the path of
// a service ("services.billing"). Other keys are not policy blocks.
func (s *ConsulSource) blockPath(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, s.prefix+"/")
	if !ok {
		return "", false
	}
	if rest == "defaults" {
		return "defaults", true
	}
	name, ok := strings.CutPrefix(rest, "services/")
	if !ok || !IsServiceName(name) {
		return "", false
	}
	return join("services", name), true
}

func sameHash(prev *Document, snap *Snapshot) bool {
	h, err := Hash(prev)
	return err == nil && h == snap.Hash
}

// ErrNoDocument is returned by ConsulKeys for a nil document.
var ErrNoDocument = errors.New("policy: no document")

// ConsulKeys splits a document into the KV pairs that hold it under prefix
// ("" means DefaultConsulPrefix): <prefix>/defaults and one
// <prefix>/services/<name> per service, each value the block as JSON. The
// document's version and trust_domain are not kept in KV: with Consul, the
// version is the content hash and the trust domain comes from the Connect CA.
// Nor is egress: a document that says egress: deny is refused, rather than
// pushed as one that lets every outside host through.
func ConsulKeys(doc *Document, prefix string) (map[string][]byte, error) {
	if doc == nil {
		return nil, ErrNoDocument
	}
	if err := doc.Validate(); err != nil {
		return nil, err
	}
	if doc.Egress == EgressDeny {
		return nil, &ValidationError{Problems: []FieldError{{Path: "egress",
			Msg: "deny cannot be kept in Consul KV, which holds the defaults and one block per service; a mesh on Consul allows egress"}}}
	}
	if prefix == "" {
		prefix = DefaultConsulPrefix
	}
	prefix = strings.TrimSuffix(prefix, "/")
	out := map[string][]byte{}
	if doc.Defaults != nil {
		b, err := marshalBlock(doc.Defaults)
		if err != nil {
			return nil, err
		}
		out[prefix+"/defaults"] = b
	}
	for _, name := range slices.Sorted(maps.Keys(doc.Services)) {
		b, err := marshalBlock(doc.Services[name])
		if err != nil {
			return nil, err
		}
		out[prefix+"/services/"+name] = b
	}
	return out, nil
}

// marshalBlock renders one block as indented JSON, the form `inmesh get`
// reads back.
func marshalBlock(s *Service) ([]byte, error) {
	return json.MarshalIndent(s, "", "  ")
}

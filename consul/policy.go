package consul

import (
	"context"
	"errors"
	"log/slog"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/policy"
)

// PolicySource is the policy kept in Consul KV under a prefix, as the value
// in force: <prefix>/mesh (the document's egress and trust_domain),
// <prefix>/defaults and <prefix>/services/<name>, each YAML or JSON,
// watched with one blocking query on the prefix. A key that does not
// validate is logged and rejected on its own: its block keeps its last good
// version. A mesh on New's control plane reads the same keys, and also
// counts and shows each rejection.
//
// PolicySource is safe for concurrent use; Close stops its watch.
type PolicySource struct {
	kv   *kvWatch
	val  value[policy.Snapshot]
	last lastError
}

// NewPolicySource starts watching the policy under prefix ("" means
// DefaultPrefix) and returns once a first valid snapshot is known, or ctx
// ends (then it stops and returns the error, with the last rejection). The
// watch outlives ctx; Close stops it. A nil logger means slog.Default().
func NewPolicySource(ctx context.Context, client *api.Client, prefix string, logger *slog.Logger) (*PolicySource, error) {
	if client == nil {
		return nil, errNoClient
	}
	logger = orDefault(logger)
	s := &PolicySource{kv: newKVWatch(client, prefix, logger, nil)}
	s.val.start()
	s.val.run(func(ctx context.Context) {
		_ = s.kv.Watch(ctx, func(ev policy.Event) {
			if ev.Err != nil {
				s.last.store(ev.Err)
				logger.Warn("policy rejected; the last valid version stays in force", "source", s.kv.String(), "err", ev.Err)
				return
			}
			s.val.set(ev.Snapshot)
		})
	})
	if err := s.val.await(ctx, "valid policy under "+s.kv.prefix+"/", s.last.load); err != nil {
		return nil, err
	}
	return s, nil
}

// Current returns the policy in force. It is never nil once
// NewPolicySource has returned; the snapshot must not be modified.
func (s *PolicySource) Current() *policy.Snapshot { return s.val.load() }

// Changed returns a channel closed at the next change of Current.
func (s *PolicySource) Changed() <-chan struct{} { return s.val.changed() }

// String names the source: "consul:<prefix>".
func (s *PolicySource) String() string { return s.kv.String() }

// Close stops the watch and waits for it. It is safe to call twice.
func (s *PolicySource) Close() error {
	s.val.close()
	return nil
}

// errNoClient is the error of a constructor or Config without a client.
var errNoClient = errors.New("consul: no client: set an *api.Client of github.com/hashicorp/consul/api")

// orDefault is logger, or slog.Default() for nil.
func orDefault(logger *slog.Logger) *slog.Logger {
	if logger == nil {
		return slog.Default()
	}
	return logger
}

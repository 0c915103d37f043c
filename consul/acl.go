package consul

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// How the control plane's requests carry Config.Token: per request, in
// QueryOptions.Token and WriteOptions.Token. An *api.Client does not expose
// its configuration, so a copy of it with another token cannot be made, and
// setting a header on it would change the application's client for every
// other use; a token per request touches nothing but our own requests, and
// leaves the Client's own token (CONSUL_HTTP_TOKEN with api.DefaultConfig)
// in force when Config.Token is "".

// query sets token on q, unless token is "" (the Client's own token), and
// returns q.
func query(q *api.QueryOptions, token string) *api.QueryOptions {
	if token != "" {
		q.Token = token
	}
	return q
}

// write is query for writes.
func write(w *api.WriteOptions, token string) *api.WriteOptions {
	if token != "" {
		w.Token = token
	}
	return w
}

// ACLError is an ACL permission the control plane's token lacks: Consul
// answered 403 to a request the mesh needs. Its message names the
// permission, the resource, and the rule that grants it, for the token's
// policy (see the README's least-privilege policy).
type ACLError struct {
	// Rule is the resource of the missing rule, in ACL rule syntax:
	// key_prefix "inmesh/", service "billing".
	Rule string
	// Access is the access the mesh needs on it: "read" or "write".
	Access string
	// For says what the mesh needed it for.
	For string
	// Err is Consul's answer.
	Err error
}

func (e *ACLError) Error() string {
	return fmt.Sprintf("consul: the token lacks %s %s (for %s): add %s { policy = %q }  to its policy: %v",
		e.Rule, e.Access, e.For, e.Rule, e.Access, e.Err)
}

func (e *ACLError) Unwrap() error { return e.Err }

// denied returns err as an ACLError for rule and access when it is
// Consul's 403, and err unchanged otherwise.
func denied(err error, rule, access, what string) error {
	if err == nil || !isForbidden(err) {
		return err
	}
	return &ACLError{Rule: rule, Access: access, For: what, Err: err}
}

// isForbidden reports whether err is Consul's answer 403 (permission
// denied).
func isForbidden(err error) bool {
	var se api.StatusError
	if errors.As(err, &se) {
		return se.Code == 403
	}
	msg := err.Error()
	return strings.Contains(msg, "403") || strings.Contains(msg, "Permission denied")
}

// keyRule is the ACL resource of the KV keys under prefix.
func keyRule(prefix string) string { return fmt.Sprintf("key_prefix %q", prefix+"/") }

// serviceRule is the ACL resource of service.
func serviceRule(service string) string { return fmt.Sprintf("service %q", service) }

// preflightTimeout bounds a permission check: an agent that does not
// answer a plain read within it is no denial (the watches retry it, and a
// mesh with a cache starts from it), so a frozen agent delays New by at
// most this much.
const preflightTimeout = 2 * time.Second

// preflight checks, at the control plane's first use (Policy, from
// mesh.New), the permissions the mesh needs whatever it calls: reading the
// policy's keys and the intentions of its own service. Both checks run at
// once; only Consul's 403 fails them, and TLS to the agent that cannot
// work (see agentTLSError); the first in that order is returned.
func (cp *ControlPlane) preflight(service string) error {
	errs := make([]error, 2)
	var wg sync.WaitGroup
	wg.Go(func() { errs[0] = cp.checkKVRead() })
	wg.Go(func() { errs[1] = cp.checkIntentionsRead(service) })
	wg.Wait()
	return cmp.Or(errs[0], errs[1])
}

// checkKVRead checks that the token may read the policy's keys. A KV list
// the token may not read is not refused: Consul filters it down to
// nothing, which a mesh would take for an empty policy. A single key is
// refused (403), so the check reads <prefix>/mesh, which need not exist.
func (cp *ControlPlane) checkKVRead() error {
	ctx, cancel := context.WithTimeout(context.Background(), preflightTimeout)
	defer cancel()
	_, _, err := cp.cfg.Client.KV().Get(cp.cfg.Prefix+"/"+keyGlobal, query(&api.QueryOptions{AllowStale: true}, cp.cfg.Token).WithContext(ctx))
	if terr := agentTLSError(err); terr != nil {
		return terr
	}
	if err = denied(err, keyRule(cp.cfg.Prefix), "read", "the policy under "+cp.cfg.Prefix+"/"); isACL(err) {
		return err
	}
	return nil
}

// checkIntentionsRead checks that the token may read the intentions of
// service: Consul grants it with service read (intentions = "read").
func (cp *ControlPlane) checkIntentionsRead(service string) error {
	ctx, cancel := context.WithTimeout(context.Background(), preflightTimeout)
	defer cancel()
	_, _, err := cp.cfg.Client.ConfigEntries().Get(api.ServiceIntentions, service, query(&api.QueryOptions{AllowStale: true}, cp.cfg.Token).WithContext(ctx))
	if err = denied(err, serviceRule(service), "read", "the intentions of "+service); isACL(err) {
		return err
	}
	return nil
}

// checkLeaf checks that the token may have the Connect leaf of service
// (service write). The agent caches the leaf it issues, so the watch that
// follows gets the same certificate without a second signing.
func (cp *ControlPlane) checkLeaf(ctx context.Context, service string) error {
	ctx, cancel := context.WithTimeout(ctx, preflightTimeout)
	defer cancel()
	_, _, err := cp.cfg.Client.Agent().ConnectCALeaf(service, query(&api.QueryOptions{}, cp.cfg.Token).WithContext(ctx))
	if err = denied(err, serviceRule(service), "write", "the Connect leaf certificate of "+service); isACL(err) {
		return err
	}
	return nil
}

func isACL(err error) bool {
	var ae *ACLError
	return errors.As(err, &ae)
}

// agentTLSError returns a clear error when err shows that TLS to the
// agent does not work (an untrusted or mismatched certificate, or HTTP and
// HTTPS mixed up), and nil otherwise. Such an error never heals by
// retrying, so it fails New instead of leaving the watches to retry.
func agentTLSError(err error) error {
	if err == nil {
		return nil
	}
	var (
		verr *tls.CertificateVerificationError
		uerr x509.UnknownAuthorityError
		herr x509.HostnameError
		cerr x509.CertificateInvalidError
	)
	msg := err.Error()
	switch {
	case errors.As(err, &verr), errors.As(err, &uerr), errors.As(err, &herr), errors.As(err, &cerr):
		return fmt.Errorf("consul: TLS to the agent: its certificate is not trusted: give the api.Config the agent's CA "+
			"(TLSConfig.CAFile, CAPath or CAPem; CONSUL_CACERT with api.DefaultConfig) and the name it was issued for (TLSConfig.Address): %w", err)
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("consul: TLS to the agent: the agent serves plain HTTP on this address, not HTTPS: %w", err)
	case strings.Contains(msg, "HTTP request to an HTTPS server"):
		return fmt.Errorf("consul: TLS to the agent: the agent serves HTTPS only: set api.Config.Scheme to \"https\" (CONSUL_HTTP_SSL=true) and its CA: %w", err)
	}
	return nil
}

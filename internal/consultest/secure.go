package consultest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// ManagementToken is the initial management token of the agents StartACL
// starts: a secret only in tests.
const ManagementToken = "5f3a2c1e-7d4b-4e8a-9c6f-0b1d2e3f4a5b"

// StartACL starts a dev agent with ACLs enabled and default_policy deny
// (tokens persisted, as in production), whose initial management token is
// ManagementToken. Its Client carries that token; ClientWithToken makes
// clients with other tokens. It returns once the ACL system answers with
// the management token.
func StartACL(t testing.TB) *Agent {
	t.Helper()
	return startAgent(t, func(a *Agent) {
		a.hcl = []string{fmt.Sprintf(`acl {
  enabled = true
  default_policy = "deny"
  enable_token_persistence = true
  tokens {
    initial_management = %q
    agent = %q
  }
}`, ManagementToken, ManagementToken)}
		a.newClient = func(a *Agent) (*api.Client, error) {
			cfg := api.DefaultConfig()
			cfg.Address = a.HTTPAddr
			cfg.Token = ManagementToken
			return api.NewClient(cfg)
		}
		a.ready = func(context.Context) error {
			_, _, err := a.Client.ACL().TokenReadSelf(nil)
			return err
		}
	})
}

// ClientWithToken returns a client of the agent that sends token ("" sends
// none, so the anonymous token applies).
func (a *Agent) ClientWithToken(t testing.TB, token string) *api.Client {
	t.Helper()
	cfg := a.Config()
	cfg.Token = token
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Config returns a fresh api.Config for the agent, without a token: the
// address, and for a StartTLS agent the https scheme and the CA.
func (a *Agent) Config() *api.Config {
	cfg := api.DefaultConfig()
	cfg.Address = a.HTTPAddr
	cfg.Token = ""
	cfg.TokenFile = ""
	if a.httpsOnly {
		cfg.Scheme = "https"
		cfg.TLSConfig = api.TLSConfig{CAPem: a.caPEM}
	}
	return cfg
}

// StartTLS starts a dev agent whose HTTP API is HTTPS only, with a server
// certificate for 127.0.0.1 signed by a CA made for the test. Its Client
// and Config trust that CA; CAPEM returns it.
func StartTLS(t testing.TB) *Agent {
	t.Helper()
	dir := t.TempDir()
	caPEM, certFile, keyFile, err := writeTestPKI(dir)
	if err != nil {
		t.Fatalf("consultest: making a CA: %v", err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	return startAgent(t, func(a *Agent) {
		a.httpsOnly = true
		a.caPEM = caPEM
		a.hcl = []string{fmt.Sprintf(`tls {
  defaults {
    ca_file = %q
    cert_file = %q
    key_file = %q
    verify_incoming = false
  }
}`, caFile, certFile, keyFile)}
		a.newClient = func(a *Agent) (*api.Client, error) { return api.NewClient(a.Config()) }
	})
}

// CAPEM returns the PEM of the CA that signed a StartTLS agent's
// certificate (nil for other agents).
func (a *Agent) CAPEM() []byte { return a.caPEM }

// writeTestPKI writes ca.pem, server.pem and server-key.pem into dir: a CA
// and a server certificate for 127.0.0.1 and localhost it signed.
func writeTestPKI(dir string) (caPEM []byte, certFile, keyFile string, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", "", err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "consultest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, "", "", err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "server.dc1.consul"},
		DNSNames:     []string{"localhost", "server.dc1.consul"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, "", "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, "", "", err
	}
	caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	for name, data := range map[string][]byte{
		"ca.pem":         caPEM,
		"server.pem":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"server-key.pem": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, "", "", err
		}
	}
	return caPEM, certFile, keyFile, nil
}

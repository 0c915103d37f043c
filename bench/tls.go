package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"

	"github.com/inmesh/inmesh/identity"
)

// bareTLS holds what plain mutual TLS 1.3 uses, from the same dev CA as the
// meshes: a certificate of service and the CA's roots.
type bareTLS struct {
	cert  tls.Certificate
	roots *x509.CertPool
}

func (e *env) bareTLS(service string) (*bareTLS, error) {
	id, err := identity.NewServiceID(trustDomain, service)
	if err != nil {
		return nil, err
	}
	cert, err := e.ca.Issue(id, 0)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	for _, r := range e.ca.Roots() {
		roots.AddCert(r)
	}
	return &bareTLS{cert: *cert, roots: roots}, nil
}

// server is the config of a server that requires a client certificate of
// the CA.
func (b *bareTLS) server() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{b.cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    b.roots,
	}
}

// client is the config of a client that presents its certificate and
// verifies the server's chain to the CA. The certificates name workloads
// by a URI SAN, not a DNS name, so crypto/tls's host name check is off and
// the chain is verified in VerifyConnection instead, as the mesh does.
func (b *bareTLS) client(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		ServerName:         serverName,
		Certificates:       []tls.Certificate{b.cert},
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("bench: no server certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots:         b.roots,
				Intermediates: inter,
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			return err
		},
	}
}

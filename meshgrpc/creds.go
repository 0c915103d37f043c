package meshgrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/inmesh/inmesh/internal/core"
)

// clientCreds are the transport credentials of the mesh's ClientConns. Each
// connection is made for one endpoint of one destination service, which the
// resolver attached to the address (addrInfo): toward a tls: strict
// destination the handshake is mTLS with this workload's identity, and the
// server must prove it is that service (identity.ClientConfig, the check the
// HTTP path makes); toward tls: disable, the connection is plaintext.
//
// Certificates are read at each handshake, so a rotated identity is used by
// new connections while established ones keep working: rotation causes no
// reconnection. Safe for concurrent use.
type clientCreds struct {
	a *adapter

	mu  sync.Mutex
	tls map[string]serviceCreds // by destination service
}

// serviceCreds are the TLS credentials toward one destination service and
// the server name (SNI) its handshakes send: the config's, which grpc-go
// would otherwise replace by the authority it is handed.
type serviceCreds struct {
	creds      credentials.TransportCredentials
	serverName string
}

var _ credentials.TransportCredentials = (*clientCreds)(nil)

func newClientCreds(a *adapter) *clientCreds {
	return &clientCreds{a: a, tls: map[string]serviceCreds{}}
}

// forService returns the TLS credentials toward service, made once.
func (c *clientCreds) forService(service string) serviceCreds {
	c.mu.Lock()
	defer c.mu.Unlock()
	sc, ok := c.tls[service]
	if !ok {
		cfg := c.a.p.ClientTLS(service)
		sc = serviceCreds{creds: credentials.NewTLS(cfg), serverName: cfg.ServerName}
		c.tls[service] = sc
	}
	return sc
}

// ClientHandshake secures a new connection to an endpoint of the service
// the address names. An address of no mesh resolver (another target dialed
// with DialOptions) is taken for one of the service its authority names,
// with that service's TLS mode, strict when the policy does not know it.
func (c *clientCreds) ClientHandshake(ctx context.Context, authority string, rawConn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	var service string
	var mtls bool
	if ai := infoOf(credentials.ClientHandshakeInfoFromContext(ctx).Attributes); ai != nil {
		service, mtls = ai.service, ai.mtls
	} else {
		service = core.ServiceOf(authority)
		mtls = true
		if _, d := c.a.p.State().Destination(service); d != nil {
			mtls = d.TLS == core.TLSStrict
		}
	}
	if !mtls {
		return rawConn, plaintextInfo{}, nil
	}
	sc := c.forService(service)
	var connect time.Duration
	if _, d := c.a.p.State().Destination(service); d != nil {
		connect = d.ConnectTimeout
	}
	if connect <= 0 {
		return sc.creds.ClientHandshake(ctx, sc.serverName, rawConn)
	}
	// The service's connect_timeout bounds the handshake: past it, the
	// connection is a connect failure, and the balancer's picks go to
	// the service's other endpoints.
	hctx, cancel := context.WithTimeout(ctx, connect)
	defer cancel()
	conn, info, err := sc.creds.ClientHandshake(hctx, sc.serverName, rawConn)
	if err != nil && ctx.Err() == nil && hctx.Err() != nil {
		err = &core.ConnectTimeoutError{Addr: rawConn.RemoteAddr().String(), Timeout: connect, Err: err}
	}
	return conn, info, err
}

func (*clientCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("meshgrpc: the client credentials of DialOptions serve no connection: use ServerOptions")
}

func (*clientCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.2"}
}

func (c *clientCreds) Clone() credentials.TransportCredentials { return newClientCreds(c.a) }

// OverrideServerName is not supported: the server's name is the
// destination service.
func (*clientCreds) OverrideServerName(string) error {
	return errors.New("meshgrpc: the server name is the destination service and cannot be overridden")
}

// serverCreds are the transport credentials of ServerOptions: mTLS with this
// workload's identity, every client certificate verified as a SPIFFE ID of
// the trust domain (identity.ServerConfig, as Mesh.ServerTLSConfig), and, while
// this workload's own service says tls: disable (its callers dial it in
// plaintext), plaintext connections too. A connection is told apart by its
// first byte: a TLS handshake starts with a handshake record (0x16), an
// HTTP/2 connection with its preface ("PRI ..."). The mode is read from the
// policy in force at each connection, so a change of tls needs no restart.
type serverCreds struct {
	a   *adapter
	tls credentials.TransportCredentials
}

var _ credentials.TransportCredentials = (*serverCreds)(nil)

func newServerCreds(a *adapter) *serverCreds {
	return &serverCreds{a: a, tls: credentials.NewTLS(a.p.ServerTLS())}
}

// tlsRecordHandshake is the content type of a TLS handshake record, the
// first byte a TLS client sends.
const tlsRecordHandshake = 0x16

func (s *serverCreds) ServerHandshake(rawConn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	var first [1]byte
	if _, err := io.ReadFull(rawConn, first[:]); err != nil {
		return nil, nil, err
	}
	conn := &peekedConn{Conn: rawConn, first: first[0], has: true}
	if first[0] == tlsRecordHandshake {
		return s.tls.ServerHandshake(conn)
	}
	if s.a.p.State().SelfPlaintext {
		return conn, plaintextInfo{}, nil
	}
	return nil, nil, fmt.Errorf("meshgrpc: plaintext connection from %s refused: service %q requires mTLS (its policy says tls: strict)",
		rawConn.RemoteAddr(), s.a.p.Service)
}

func (*serverCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("meshgrpc: the server credentials of ServerOptions dial no connection: use DialOptions")
}

func (*serverCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.2"}
}

func (s *serverCreds) Clone() credentials.TransportCredentials {
	return &serverCreds{a: s.a, tls: s.tls.Clone()}
}

func (*serverCreds) OverrideServerName(string) error { return nil }

// peekedConn gives back the byte read to tell TLS from plaintext before the
// rest of the connection.
type peekedConn struct {
	net.Conn
	first byte
	has   bool
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if c.has && len(p) > 0 {
		p[0] = c.first
		c.has = false
		return 1, nil
	}
	return c.Conn.Read(p)
}

// plaintextInfo is the AuthInfo of a plaintext connection (tls: disable).
type plaintextInfo struct{}

func (plaintextInfo) AuthType() string { return "insecure" }

// ValidateAuthority lets a call override :authority, as grpc-go's insecure
// credentials do: there is no certificate to check it against.
func (plaintextInfo) ValidateAuthority(string) error { return nil }

// GetCommonAuthInfo says the connection has no security.
func (plaintextInfo) GetCommonAuthInfo() credentials.CommonAuthInfo {
	return credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}
}

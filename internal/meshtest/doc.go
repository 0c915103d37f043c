// Package meshtest holds the helpers that the tests of mesh, meshgrpc and
// consul share: a counting HTTP backend, a counting listener, the plain
// billing policies, the path-attack runner, a quiet logger and polling.
//
// It sits outside the request flow: only _test.go files import it. It
// imports neither mesh nor anything that does, so that package mesh's own
// internal tests can use it too; what needs a *mesh.Mesh takes the pieces
// it uses (a handler wrapper, a TLS configuration, an identity source)
// instead. Each helper registers its cleanup on the test it is given; the
// values it returns belong to that test and are safe to share only where
// their fields say so (the counters are atomic).
package meshtest

// Package meshlink is the seam between package mesh and its protocol
// adapters that live in packages of their own (meshgrpc): a Plane holds
// exactly what an adapter needs of a Mesh that is not its public API (the
// published state and its watch, the environment of the core's calls,
// tracing, the client TLS configurations, the authorization of callers,
// the watch of a destination's endpoints), and Of hands a Mesh's Plane to
// the adapter.
//
// # Why a function variable
//
// The adapter imports mesh (its API takes a *mesh.Mesh), so mesh cannot
// import the adapter, and this package cannot import mesh either (mesh
// imports it). An exported method of Mesh returning its Plane would work
// too, but it would show in mesh's documentation to every user, and grpc-go
// solves the same problem (its public packages reaching each other's
// internals) the same way: a function variable of an internal package that
// the public package sets once, at its initialization. Of is that variable;
// package mesh sets it, and nothing else does. Since only packages of this
// module can import meshlink, nothing of it leaks into the public API.
//
// # Concurrency
//
// A Plane is built once per Mesh, at New, and never modified afterwards; its
// functions are safe for concurrent use. A State is immutable once
// published, as the mesh state it mirrors.
//
// # Where it sits in the request flow
//
// Nowhere on its own: it carries no logic. The request flow is described
// in package mesh's documentation; an adapter reads the state through
// Plane.State on each call and runs the core's call (package core) with
// Plane.Env, as the HTTP round tripper of package mesh does.
package meshlink

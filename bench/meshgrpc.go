package main

import (
	"google.golang.org/grpc"

	"github.com/inmesh/inmesh/mesh"
)

// The gRPC entry points of inmesh, in one place: when they move to package
// meshgrpc (meshgrpc.DialOptions(m), meshgrpc.ServerOptions(m)), this file
// is the one edit.

func meshDialOptions(m *mesh.Mesh) []grpc.DialOption { return m.DialOptions() }

func meshServerOptions(m *mesh.Mesh) []grpc.ServerOption { return m.ServerOptions() }

// Package clustertest runs a Parley cluster inside a test: an embedded
// etcd and several nodes (internal/node) in this process, each with its
// own data directory, client listener and node link on free loopback
// ports, their link certificates issued by a cluster CA made for the
// test. Users are placed on chosen nodes (Cluster.PhoneOn), and devices
// of package nodetest connect to any node (Device.Via), so a test can
// prove that any node serves any user and compare what was acknowledged
// with what arrived.
//
// Threading: Start, Restart and the helpers that take a testing.TB belong
// to the test's goroutine; Node and Home may be called from any.
package clustertest

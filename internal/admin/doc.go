// Package admin is a node's operator endpoint: Prometheus metrics at
// /metrics, liveness at /healthz and readiness at /readyz, the node's
// state at /status, an account's devices and queue at /users/{id}, Go's
// profiler at /debug/pprof/, the process's memory at /debug/memory, the
// latest user reports at /reports (spec.md section 18.5), and, by POST,
// /drain, /backup (a tar stream) and /users/{id}/devices/{d}/revoke
// (ops.go; parleyctl is their client).
//
// It is meant for a loopback or otherwise private address: it has no
// authentication (whoever reaches it can drain the node, revoke devices
// and take a backup holding every queued message), the profiler can slow
// the node down, and the reports hold what users revealed of their
// conversations. Changing requests must carry the Parley-Admin header
// (HeaderMutate), which a web page cannot send to it without a CORS
// preflight the endpoint never grants.
//
// The metrics are read at scrape time from the counters the server, the
// shards, the media service and the SMS sender already keep (server.Stats,
// storage.Shard.Stats and Flow, media.Service.Stats, sms.Sender.Stats), so
// the message path pays only atomic adds for them; the one exception is
// Commits, histograms the shards feed through storage.Config.OnCommit and
// OnSync.
//
// Threading: a Commits observer (Commits.Observer, ObserveSync) may be
// called from any goroutine (every shard actor calls it). An Admin's
// methods are safe for concurrent use; handlers run on net/http's
// goroutines and call the Operator, which must be safe for that.
package admin

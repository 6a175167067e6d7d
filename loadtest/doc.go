// Package loadtest is Parley's load generator: it drives a node with
// thousands of real TLS clients speaking the wire protocol, verifies every
// delivery end to end, and reports throughput, latency and the server's
// own figures against the budgets of DESIGN.md.
//
// A run has one coordinator and one or more worker processes. The
// coordinator (Run) optionally starts a node (Config.Spawn), splits the
// accounts over the workers, starts each worker as a child process bound
// to its own source address (127.0.0.2, 127.0.0.3, …: one process may hold
// only 20,000 open files, and one source address only as many connections
// as there are ephemeral ports), and walks them through the scenario's
// steps in lock step: every worker finishes step i, the coordinator runs
// its own part of step i (reading the server's memory, timing the step),
// then tells them all to go on. Workers report counters and latency
// histograms (HdrHistogram, V2-encoded) every second; the coordinator
// merges them into the live progress line and the final Result.
//
// Workers speak the lean raw protocol: codec frames over crypto/tls, one
// reader goroutine per connection, one sender goroutine per sending
// device, no SDK. A device remembers its cursor and its unacknowledged
// sends across reconnects and resends them with the same cmid, as spec.md
// [S-8-14] requires, so scenarios that cut connections still account for
// every message.
//
// Verification: message bodies carry the intended send time (the
// scheduled time of a send the server held back, else the write's:
// internal/pace), the actual send time and the sender's cmid. A receiver checks that inbox seqs grow
// by one (a seq at or below the cursor is a duplicate, a jump is a gap),
// that a cmid arrives once, and that cmids from one sender do not go
// backwards (except for resent ones). At the end, a message whose Sent
// was seen but which never arrived is lost. Any lost, duplicated,
// reordered or skipped message fails the run.
//
// Scenarios are values in the table in scenario.go, one file each
// (scenario_pairs.go, …): adding one is a file and a line. The envelopes
// scenario links companions to the pairs' users and sends per-device
// envelopes; each receiving device keeps a ledger per sender (its peer,
// and on a companion its primary's copies), so loss, duplication and
// order are checked per device. The groups scenario may give its users
// companions too (--devices), and group-envelopes
// (scenario_group_envelopes.go) adds sender keys: each sender first hands
// its key to every other member in 1:1 envelopes, then its group messages
// are one sender key ciphertext each; every device checks its own
// envelopes (their bytes are drawn from sender, cmid and device, so a
// device that got another's is caught), and the group's one order. A step
// may also run code in the coordinator while the workers run it
// (Step.During).
//
// The abuse scenario (scenario_abuse.go) runs pairs as bystanders while
// worker 0 attacks the node's rate limits from one client: verification
// codes and link codes over fresh connections from a few source
// addresses of its own (127.0.1.x, 127.0.2.x), and SENDs from one
// account. It reports each request kind's answers by code and, from the
// admin endpoint, the server's refusals by limit.
//
// A run can also start a local cluster of parleyd processes
// (Config.SpawnCluster, spawn_cluster.go): an etcd member inside the
// coordinator, a cluster CA and node certificates in a temporary
// directory, the nodes on free loopback ports. Workers then connect device
// (account) i to node i mod N and pin each node's certificate; the server
// figures are summed over the nodes' admin endpoints.
//
// The chaos scenario (scenario_chaos.go) is the exception to the lean
// clients: it runs in one worker, on the SDK (client/), with users on
// every shard, two or three devices each, groups across shards whose
// members come and go, and read marks, while the coordinator kills or
// restarts a real parleyd (Config.Parleyd, spawn_parleyd.go), or a node
// of a spawned cluster, at moments (and nodes) drawn from Config.Seed
// (chaos_kill.go). Its verifier (chaos_verify.go)
// compares every acknowledged send, read mark and group event with what
// every device got: exactly once, in order, the groups' one order, the
// receipts owed, and nothing else.
//
// Threading: Run belongs to one goroutine, and a step's During to one
// more while it runs. Inside a worker, a device's fields are guarded by
// its mutex; a direction (ledger.Flow) by its own; a chaos run's verifier
// locks for itself.
package loadtest

// Package nodetest runs a Parley node inside a test and keeps the books of
// what its clients were promised and what they got. It is the one
// harness every end-to-end test uses (server, client, cmd/parley,
// internal/admin), in the way etcd's rafttest and caddy's caddytest serve
// their projects.
//
// What it offers:
//
//   - Start: a complete node in process on free loopback ports (client,
//     media, and admin when asked), never a fixed port, with a chosen
//     shard count, a data directory of the test's own, a logger that
//     writes to the test's output, and a shutdown when the test ends.
//   - Codes: the verification-code catcher the node sends codes to, with a
//     wait by event for a code to arrive.
//   - Phones on a chosen shard (Node.PhoneOn, Node.RegisterOn), so a test
//     can put users on different shards on purpose and exercise the paths
//     between shards.
//   - Recorder and Device: raw wire devices (no SDK) that log in, read
//     their inbox stream on a goroutine, acknowledge every entry, send, and
//     disconnect and resume at will; the recorder fails the test on a gap,
//     a duplicate or an out-of-order seq, a resume at the wrong cursor, a
//     group order that differs between devices, a delivery to a group
//     member after its removal, a delivered message no SENT answered, and,
//     once the traffic has settled, a SENT message that a device of the
//     recipient (or another device of the sender) never got. It keeps its
//     books with the load tester's ledger (internal/ledger).
//   - VerifyMain: the goroutine-leak check for TestMain.
//
// Waiting is by event with a deadline, never by sleeping: every recorded
// frame wakes the waiters, which re-check their condition.
//
// Threading: a Node's methods may be called from any goroutine, but the
// helpers that take a testing.TB fail the test with Fatal and so belong
// to the test's goroutine. A Recorder and its Devices are safe for
// concurrent use: each Device reads on its own goroutine, and Connect,
// Connected, Disconnect, Send, SendGroup, Resend, Request, WaitSent,
// WaitAnswer and WaitSyncedWithin may be called from helper goroutines (they report trouble as violations or errors,
// never with Fatal). Wait, WaitFor, WaitSynced, Resync, Settle and Check
// call Fatal and belong to the test's goroutine. All
// recorded state is guarded by the Recorder's mutex; a Device's own mutex
// guards only its connection. Lock order: a Device's mutex before its
// Recorder's.
//
// A Device sends no Ping: use it on a node whose heartbeat outlasts the
// test's quiet spells (the default, 60 s, closes a connection silent for 90 s).
package nodetest

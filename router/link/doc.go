// Package link carries opaque messages between the nodes of a cluster:
// persistent, mutually authenticated TLS 1.3 connections, batched and
// compressed where it pays, with a bounded queue per peer, heartbeats and
// reconnection. The router sends shard ops and endpoint calls over it;
// what a message means (its type byte and body) is the caller's business.
//
// # Contract
//
// A Link sends to each peer over one connection it dials (with jittered
// exponential backoff after a failed dial, or a session the peer ended
// within DeadAfter) and receives from each peer over the
// connection the peer dialed: messages go dialer → acceptor, acks and
// heartbeats come back. Every message Send accepted gets the next
// sequence number of this node's stream towards the peer, and stays in
// the peer's queue until the peer confirms it was delivered:
//
//   - Accepted messages are delivered to the peer's OnMessage once each,
//     in the order Send accepted them, across lost connections, resets and
//     partitions of any length: after a reconnect the dialer resends from
//     the last sequence the acceptor confirmed (its Welcome says which),
//     and the acceptor skips what it already delivered.
//   - Send never blocks. When the queue holds QueueMessages or QueueBytes
//     it refuses with ErrQueueFull; the caller's retry path (the outbox's
//     resend) takes over. The receiver gets OnGap in the place of the
//     refused messages, so a stream whose consumer cannot tolerate a hole
//     (pushes to a client connection) can tell.
//   - When a peer shows a new boot generation (Config.Gen) in its hello,
//     it restarted: the queue for it is dropped (it was for the old
//     incarnation, whose connections are gone), both streams restart at
//     sequence 1, and OnPeerRestart is called before anything of the new
//     incarnation is delivered. Messages accepted between the restart and
//     the moment this node learns of it are dropped with the queue: the
//     outbox resends forwards; endpoint calls for connections of the old
//     boot have nobody to go to. A hello with an older generation than
//     one already seen is refused.
//   - RemovePeer drops the queue; if the peer is added again, the stream
//     continues with a gap in place of the dropped messages. A message
//     Send refuses with ErrUnknownPeer for a peer that only dialed this
//     node (its address not set yet) leaves a gap in the same way.
//   - Close, or this process dying, loses the queues: peers see the next
//     start's generation as a restart.
//
// A dead peer (nothing read for DeadAfter, while each end sends something
// every Heartbeat) is noticed within DeadAfter; its connection is closed
// and redialed, and OnPeerState reports the link down and up again.
//
// # Authentication
//
// Every node has a certificate signed by the cluster CA (CreateCA,
// IssueNode; parleyd cluster-cert) naming its id as the DNS name
// node-<id>.parley.invalid (NodeName). Both ends verify the other's chain
// against the cluster CA only: a dialer checks that the certificate names
// the node it meant to reach, an acceptor that the hello names the node
// in the certificate and is meant for it. TLS 1.3 only, no session
// resumption.
//
// # Wire
//
// After the TLS handshake, each direction is a stream of codec frames
// (package codec: uvarint body length, kind byte with the compression
// flag, body). The kinds are the link's own, not the client protocol's:
//
//	1 Hello    dialer → acceptor   version 1, uvarint node id, uvarint generation, uvarint target node id
//	2 Welcome  acceptor → dialer   version 1, uvarint node id, uvarint generation,
//	                               uvarint last sequence delivered from the dialer's generation (0: none)
//	3 Batch    dialer → acceptor   uvarint sequence of the first record, then records:
//	                               type byte (0: gap marker), uvarint length, body
//	4 Ack      acceptor → dialer   uvarint last sequence delivered: AckDelay after a batch, at once
//	                               when 1,024 messages wait for it, and every Heartbeat
//	5 Ping     dialer → acceptor   empty; the dialer's heartbeat while idle
//
// A Batch may skip sequences only if its first record is a gap marker.
// With Config.CompressMin set, a Batch of at least that many bytes of
// records is zstd-compressed (codec.Compressor) when that saves an eighth;
// a receiver always accepts compressed batches, their inflated size
// capped like any frame's (2 MiB - 1).
//
// # Batching
//
// Each peer's writer takes everything queued since its last write and
// writes it at once (one TLS write of up to four batches of BatchBytes;
// crypto/tls makes one write(2) per 16 KiB record of it):
// no timer delays a message, and what queues while a write is in progress
// is the next write's batch, so batches grow with the load.
//
// Node links do not run on gnet: they are few (one per peer and
// direction) and long-lived, so a goroutine per connection costs nothing
// that matters, and crypto/tls's blocking API serves them as it is.
//
// Threading: a Link is safe for concurrent use. Each peer has a dialer
// goroutine (its writer), and each connection a reader and, inbound, an
// acker; the handlers run on the readers (and the handshakes for
// OnPeerRestart), never concurrently for one peer. Lock order: a peer's
// recvMu, then its mu, then Link.mu.
package link

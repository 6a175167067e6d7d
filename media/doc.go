// Package media is Parley's media service (spec.md section 14): images,
// video, voice notes and documents are uploaded once over HTTPS and
// fetched by signed, expiring URL; their bytes never travel over the chat
// connection, whose messages carry only a reference the clients put in
// their opaque bodies.
//
// # Pieces
//
//   - Slot and URL requests. The chat server hands MEDIA_UPLOAD and
//     MEDIA_DOWNLOAD requests to Upload and Download, which never block:
//     they queue the request (Config.QueueLen, else the server answers
//     OVERLOADED) for a small pool of workers (Config.Workers), and a
//     worker answers through the connection's Replier. A slot request
//     for bytes the service already has gets a fresh media id that is
//     usable at once ("stored", no upload); otherwise a fresh id and an
//     upload URL.
//   - The HTTPS endpoint (Handler): PUT and HEAD on upload URLs
//     (resumable uploads), GET and HEAD on download URLs (single byte
//     Range requests). net/http runs each request on its own goroutine;
//     that is fine here, off the chat path, and bounded by
//     Config.MaxTransfers. A transfer streams through one 128 KiB buffer,
//     so memory does not grow with the media's size.
//   - The Store of blobs: FSStore (default, in the data directory) or
//     S3Store (an S3-compatible bucket, through minio-go). Blobs are
//     content addressed: named by their SHA-256, stored once however many
//     media ids name them.
//   - Metadata in a Pebble database of its own (Dir/meta), written with
//     fsync: media id → state, type, size, SHA-256, times; blob → size,
//     last reference; blob → its ids.
//   - The sweeper (Sweep), hourly: stored media not referenced for
//     Config.Expiry (30 days) goes, blob and ids; unfinished uploads idle
//     for Config.IncompleteExpiry (7 days) go; staged files and blobs no
//     record names (what a crash can leave) go.
//
// # Decisions
//
//   - Media ids are 16 bytes from crypto/rand (128 bits): unguessable. A
//     slot request always mints a new id, also when the bytes are already
//     stored, so an id never leaks to another uploader. Knowing the SHA-256
//     of stored bytes is enough to get an id for them; end-to-end
//     encrypted media (a fresh key per file, the hash of the ciphertext)
//     makes that hash a secret of the conversation.
//   - URLs are signed with HMAC-SHA256 under a per-node key (Dir/url.key,
//     32 random bytes made on first start; nodes sharing a bucket share
//     the file) over "PUT" or "GET", the media id in hex and the expiry
//     in Unix seconds, each separated by "\n". The server checks the
//     signature with hmac.Equal before it looks at the expiry; an altered
//     expiry, path or signature is MEDIA_BAD_SIGNATURE, an honest expired
//     URL MEDIA_URL_EXPIRED. An upload URL lives 24 hours, a download
//     URL 1 hour; a transfer that started in time may finish later.
//   - Resumable uploads use plain PUT and HEAD, which URLSession and
//     OkHttp do as they are: HEAD says how many bytes the server has
//     (Upload-Offset), and a PUT with "Content-Range: bytes
//     <offset>-<size-1>/<size>" continues from there. Each PUT carries the
//     rest of the media: no chunking, so a body that ends cleanly short of
//     the size, or runs past it, is wrong, while a body that breaks off
//     (connection cut, 30 s without a byte) keeps what arrived.
//   - Each upload is staged in its own file (Dir/uploads/<id>), hashed as
//     it arrives (a resumed upload first re-reads what the server has) and
//     verified, size and SHA-256, before it is committed: moved into the
//     store under its hash unless the store has it, then recorded ready in
//     one synced batch. Two clients uploading the same bytes at once each
//     stage a copy; the first commit stores the blob and the second finds
//     it and drops its copy, so one copy is stored. A refused upload
//     (wrong hash, wrong size) deletes its staged bytes and its id.
//   - With S3 the upload is staged on local disk and copied to the bucket
//     when verified: resuming then needs no multipart bookkeeping and the
//     bucket only ever holds verified blobs.
//   - Deletion never races an upload: the sweeper decides under mu, skips
//     an upload with a PUT in progress and a hash being committed, deletes
//     the records first (so nothing hands the blob out any more) and then
//     the blob; a commit of the same bytes waits for that delete to end
//     and stores the blob again.
//   - A download URL request refreshes the blob's last reference at most
//     once an hour (touchEvery), so expiry is exact to an hour and reads
//     rarely write.
//
// # Threading
//
// A Service is safe for concurrent use. mu serialises every
// read-modify-write of the metadata together with the maps of uploads in
// progress, hashes being committed and hashes being deleted; it is held
// across metadata commits (an fsync) but never across blob I/O or
// network I/O. limMu guards the per-user request counts; the two locks
// are never held together. Reads of the metadata take no lock.
package media

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
//   - Limits (transfer.go, space.go; spec.md section 14.5), so no user
//     can take the endpoint or the disk from the others: a transfer slot
//     counts against the user its URL was issued to, who holds at most
//     Config.MaxUserTransfers, and the last Config.ReservedTransfers free
//     slots go to users holding none; a watchdog (every second, by
//     Config.Now) cuts a body moving slower than Config.MinTransferRate
//     over a Config.RateWindow, by setting the connection's deadline in
//     the past; the unfinished uploads of a user hold at most
//     Config.StagingQuota bytes; and no upload is admitted that would
//     leave less than Config.MinFreeBytes free on Dir's file system
//     (statfs, read at most once a second), counting the bytes admitted
//     PUTs have yet to write. Stats counts the refusals by reason, the
//     transfers cut and the bytes staged.
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
//     the file) over "PUT" or "GET", the media id in hex, the user the
//     URL is issued to and the expiry in Unix seconds, each separated by
//     "\n". The user is in the URL (u=) so the endpoint can count a
//     transfer against its user before it reads anything else. The server checks the
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
//   - The staging quota counts the slot's requester (the record's owner),
//     not whoever holds the URL: the bytes on disk are the uploader's. A
//     slot holds nothing until its PUT starts, so abandoned slots cost a
//     metadata record, not quota; while a PUT runs, its upload counts its
//     whole size, so concurrent PUTs cannot overshoot the quota. Open
//     counts the staged files again from the metadata.
//   - A refusal checked before the body is read (quota, free space, a
//     busy or misplaced upload, no slot) answers an HTTP/1 PUT with
//     "Connection: close": net/http would otherwise read up to 256 KiB of
//     the body first, as slowly as the client likes.
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
// progress, hashes being committed and hashes being deleted, and the
// staging counts; it is held across metadata commits (an fsync) and the
// free-space query (statfs, at most once a second) but never across blob
// I/O or network I/O. limMu guards the per-user request counts. The
// transfers have their own lock (transfers.mu) and each transfer one
// (transfer.mu); neither is ever held together with another lock.
// diskSpace.mu is taken under mu or alone. Reads of the metadata take no
// lock.
package media

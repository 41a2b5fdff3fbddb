// The platform document's Go client, made correct: the services live in their own packages, the
// token travels as `authorization: Bearer` metadata added by client interceptors (unary and
// streaming), the chat stream resumes from the last message id so the message just sent comes
// back, a WAV goes up in chunks and comes back as Ogg Opus, and a live stream goes on air with
// a listener on a connection of its own that keeps calling while it listens.
//
// Usage: ./run.sh   (VEZA_ADDR=localhost:9090, VEZA_EMAIL, VEZA_PASSWORD, VEZA_ROOM,
// VEZA_WAV: a WAV file to upload instead of the generated tone, VEZA_MAX_MESSAGES: stop after
// that many streamed messages; 0 = follow forever)
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	authpb "veza.app/examples/go/gen/veza/auth"
	chatpb "veza.app/examples/go/gen/veza/chat"
	streampb "veza.app/examples/go/gen/veza/stream"
)

// chunkBytes is the upload chunk size (the server takes up to 1 MiB a chunk).
const chunkBytes = 64 << 10

// protoCodec replaces grpc-go's "proto" codec, which Debian bookworm builds on
// github.com/golang/protobuf 1.3: that one cannot marshal the APIv2 messages protoc-gen-go 1.28
// generates ("protobuf tag not enough fields"). This one calls google.golang.org/protobuf.
type protoCodec struct{}

func (protoCodec) Marshal(v interface{}) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("cannot marshal %T: not a proto.Message", v)
	}
	return proto.Marshal(m)
}

func (protoCodec) Unmarshal(data []byte, v interface{}) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("cannot unmarshal into %T: not a proto.Message", v)
	}
	return proto.Unmarshal(data, m)
}

func (protoCodec) Name() string { return "proto" }

func init() { encoding.RegisterCodec(protoCodec{}) }

// bearer holds the access token and adds it to every outgoing call once it is known.
type bearer struct {
	mu    sync.RWMutex
	token string
}

func (b *bearer) set(token string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.token = token
}

func (b *bearer) attach(ctx context.Context) context.Context {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+b.token)
}

// Unary is the seed's interceptor shape on the client side: the token goes into the metadata.
func (b *bearer) Unary() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply interface{}, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(b.attach(ctx), method, req, reply, cc, opts...)
	}
}

// Stream does the same for server-, client- and bidirectional-streaming calls.
func (b *bearer) Stream() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(b.attach(ctx), desc, cc, method, opts...)
	}
}

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func envInt(name string, fallback int64) int64 {
	v := os.Getenv(name)
	if v == "" {
		return fallback
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		log.Fatalf("%s: %v", name, err)
	}
	return n
}

// tone is a WAV file: 2 s of a 440 Hz sine, 16-bit PCM, 48 kHz mono.
func tone() []byte {
	const rate, seconds = 48000, 2
	pcm := make([]byte, 2*rate*seconds)
	for i := 0; i < rate*seconds; i++ {
		s := int16(0.3 * math.MaxInt16 * math.Sin(2*math.Pi*440*float64(i)/rate))
		binary.LittleEndian.PutUint16(pcm[2*i:], uint16(s))
	}
	var w bytes.Buffer
	le := func(v interface{}) { _ = binary.Write(&w, binary.LittleEndian, v) }
	w.WriteString("RIFF")
	le(uint32(36 + len(pcm)))
	w.WriteString("WAVEfmt ")
	le(uint32(16))
	le(uint16(1)) // PCM
	le(uint16(1)) // channels
	le(uint32(rate))
	le(uint32(rate * 2)) // byte rate
	le(uint16(2))        // block align
	le(uint16(16))       // bits per sample
	w.WriteString("data")
	le(uint32(len(pcm)))
	w.Write(pcm)
	return w.Bytes()
}

// upload creates the track from its metadata, then sends the bytes in chunks 0, 1, 2...
func upload(ctx context.Context, c streampb.StreamServiceClient, title string, data []byte) (int64, error) {
	created, err := c.UploadAudio(ctx, &streampb.UploadAudioRequest{
		Title:      title,
		Genre:      "test tone",
		FileSize:   int64(len(data)),
		FileFormat: "wav",
	})
	if err != nil {
		return 0, fmt.Errorf("UploadAudio: %w", err)
	}
	id := created.TrackId
	fmt.Printf("Upload created: track %d\n", id)
	up, err := c.UploadAudioChunks(ctx)
	if err != nil {
		return 0, fmt.Errorf("UploadAudioChunks: %w", err)
	}
	chunks := 0
	for off := 0; off < len(data); off += chunkBytes {
		end := off + chunkBytes
		if end > len(data) {
			end = len(data)
		}
		chunk := &streampb.AudioChunk{StreamId: id, ChunkIndex: int32(chunks), AudioData: data[off:end]}
		if err := up.Send(chunk); errors.Is(err, io.EOF) {
			break // the server already answered: CloseAndRecv returns its status
		} else if err != nil {
			return 0, fmt.Errorf("sending chunk %d: %w", chunks, err)
		}
		chunks++
	}
	done, err := up.CloseAndRecv()
	if err != nil {
		return 0, fmt.Errorf("UploadAudioChunks: %w", err)
	}
	fmt.Printf("Uploaded %d bytes in %d chunks: track %d (audio %s)\n", len(data), chunks, done.TrackId, done.AudioUrl)
	return id, nil
}

// waitReady polls GetStreamInfo while the track is being processed.
func waitReady(ctx context.Context, c streampb.StreamServiceClient, id int64) (*streampb.GetStreamInfoResponse, error) {
	for {
		info, err := c.GetStreamInfo(ctx, &streampb.GetStreamInfoRequest{StreamId: id})
		if err != nil {
			return nil, fmt.Errorf("GetStreamInfo: %w", err)
		}
		switch info.Status {
		case "ready":
			return info, nil
		case "failed":
			return nil, fmt.Errorf("track %d failed: %s", id, info.ErrorMessage)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("track %d still %s: %w", id, info.Status, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// listen streams the track back as Ogg Opus and returns the bytes.
func listen(ctx context.Context, c streampb.StreamServiceClient, id int64) ([]byte, int, error) {
	stream, err := c.StreamAudio(ctx, &streampb.StreamAudioRequest{TrackId: id, Format: "ogg"})
	if err != nil {
		return nil, 0, fmt.Errorf("StreamAudio: %w", err)
	}
	var audio []byte
	chunks := 0
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return audio, chunks, nil
		}
		if err != nil {
			return nil, 0, fmt.Errorf("StreamAudio: %w", err)
		}
		audio = append(audio, chunk.AudioData...)
		chunks++
	}
}

// live goes on air with paced PCM on conn and listens on a second connection, listener. After
// a second alone on it, the server lets that connection go from hyper with a GOAWAY: grpc-go
// moves its next calls to a new connection, so GetStreamInfo on the same client succeeds while
// the stream plays on.
func live(ctx context.Context, media, listener streampb.StreamServiceClient) error {
	started, err := media.StartStream(ctx, &streampb.StartStreamRequest{
		Title: "Go client live", SampleRate: 48000, Channels: 1, Codec: "pcm_s16le",
	})
	if err != nil {
		return fmt.Errorf("StartStream: %w", err)
	}
	id := started.StreamId
	up, err := media.UploadAudioChunks(ctx)
	if err != nil {
		return fmt.Errorf("UploadAudioChunks: %w", err)
	}
	onAir, stop := context.WithCancel(ctx)
	defer stop()
	sent := make(chan error, 1)
	go func() {
		pcm := make([]byte, 2*4800) // 100 ms of silence, 48 kHz mono
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := int32(0); ; i++ {
			chunk := &streampb.AudioChunk{StreamId: id, ChunkIndex: i, AudioData: pcm,
				SampleRate: 48000, Channels: 1, Codec: "pcm_s16le"}
			if err := up.Send(chunk); err != nil {
				sent <- err
				return
			}
			select {
			case <-onAir.Done():
				_, err := up.CloseAndRecv()
				sent <- err
				return
			case <-tick.C:
			}
		}
	}()
	stream, err := listener.StreamAudio(ctx, &streampb.StreamAudioRequest{TrackId: id})
	if err != nil {
		return fmt.Errorf("StreamAudio (live): %w", err)
	}
	heard := make(chan int, 1)
	go func() {
		n := 0
		for {
			if _, err := stream.Recv(); err != nil {
				heard <- n
				return
			}
			n++
		}
	}()
	time.Sleep(3 * time.Second)
	info, err := listener.GetStreamInfo(ctx, &streampb.GetStreamInfoRequest{StreamId: id})
	if err != nil {
		return fmt.Errorf("GetStreamInfo while listening: %w", err)
	}
	time.Sleep(time.Second)
	if _, err := media.StopStream(ctx, &streampb.StopStreamRequest{StreamId: id}); err != nil {
		return fmt.Errorf("StopStream: %w", err)
	}
	stop()
	if err := <-sent; err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("producer: %w", err)
	}
	fmt.Printf("Live stream %d: %d chunks heard; while listening, GetStreamInfo on the listener's client: %s, %d listener(s)\n",
		id, <-heard, info.Status, info.Listeners)
	return nil
}

func run() error {
	addr := env("VEZA_ADDR", "localhost:9090")
	room := envInt("VEZA_ROOM", 1)
	maxMessages := envInt("VEZA_MAX_MESSAGES", 0)

	creds := &bearer{}
	conn, err := grpc.Dial(addr,
		grpc.WithInsecure(), // grpc-go 1.33 (Debian bookworm) predates credentials/insecure
		grpc.WithUnaryInterceptor(creds.Unary()),
		grpc.WithStreamInterceptor(creds.Stream()),
	)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", addr, err)
	}
	defer conn.Close()
	auth := authpb.NewAuthServiceClient(conn)
	chat := chatpb.NewChatServiceClient(conn)
	media := streampb.NewStreamServiceClient(conn)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	session, err := auth.Authenticate(ctx, &authpb.AuthenticateRequest{
		Email:    env("VEZA_EMAIL", "user@veza.app"),
		Password: env("VEZA_PASSWORD", "password123"),
	})
	if err != nil {
		return fmt.Errorf("authentication failed: %w", err)
	}
	creds.set(session.AccessToken)
	fmt.Println("Authenticated successfully")

	sent, err := chat.SendMessage(ctx, &chatpb.SendMessageRequest{RoomId: room, Content: "Hello from Go client!"})
	if err != nil {
		return fmt.Errorf("SendMessage: %w", err)
	}
	fmt.Printf("Message sent: id %d in room %d\n", sent.Message.MessageId, sent.Message.RoomId)

	data, title := tone(), "Go client tone"
	if path := os.Getenv("VEZA_WAV"); path != "" {
		if data, err = os.ReadFile(path); err != nil {
			return err
		}
		title = path
	}
	audioCtx, audioCancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer audioCancel()
	id, err := upload(audioCtx, media, title, data)
	if err != nil {
		return err
	}
	info, err := waitReady(audioCtx, media, id)
	if err != nil {
		return err
	}
	fmt.Printf("Track %d is %s: %d ms, %s %d Hz %d ch, renditions %v kbps\n",
		id, info.Status, info.DurationMs, info.SourceCodec, info.SampleRate, info.Channels, info.RenditionBitrates)
	audio, chunks, err := listen(audioCtx, media, id)
	if err != nil {
		return err
	}
	head := audio
	if len(head) > 4 {
		head = head[:4]
	}
	fmt.Printf("Streamed back %d bytes in %d chunks, starting with %q\n", len(audio), chunks, head)

	own, err := grpc.Dial(addr,
		grpc.WithInsecure(),
		grpc.WithUnaryInterceptor(creds.Unary()),
		grpc.WithStreamInterceptor(creds.Stream()),
	)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", addr, err)
	}
	defer own.Close()
	if err := live(audioCtx, media, streampb.NewStreamServiceClient(own)); err != nil {
		return err
	}

	follow, stop := context.WithCancel(context.Background())
	defer stop()
	stream, err := chat.StreamMessages(follow, &chatpb.StreamMessagesRequest{RoomId: room, LastMessageId: sent.Message.MessageId - 1})
	if err != nil {
		return fmt.Errorf("StreamMessages: %w", err)
	}
	for received := int64(1); ; received++ {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("StreamMessages: %w", err)
		}
		fmt.Printf("Received message: %s (id %d, from user %d)\n", msg.Content, msg.MessageId, msg.UserId)
		if maxMessages > 0 && received >= maxMessages {
			stop()
			return nil
		}
	}
}

func main() {
	if err := run(); err != nil {
		log.Fatalf("Error: %v", err)
	}
}

// A Connect-ES client (@connectrpc/connect, the published Connect client) against Veza, once
// per protocol the server speaks to it (SPEC §11): Connect JSON over HTTP/1.1 and gRPC-Web on
// the HTTP port, Connect binary and gRPC over HTTP/2 on the gRPC port. Each run logs in, reads
// the user, sends a chat message, streams it back and checks that a bad password is refused.
//
// Usage: node gen.js && node client.js   (VEZA_GRPC_ADDR=localhost:9090, VEZA_HTTP=localhost:8080,
// VEZA_EMAIL, VEZA_PASSWORD, VEZA_ROOM)
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from '@connectrpc/connect-node';
import { AuthService } from './gen/veza/auth_pb.js';
import { ChatService } from './gen/veza/chat_pb.js';

const grpcAddr = process.env.VEZA_GRPC_ADDR || 'localhost:9090';
const httpAddr = process.env.VEZA_HTTP || 'localhost:8080';
const email = process.env.VEZA_EMAIL || 'user@veza.app';
const password = process.env.VEZA_PASSWORD || 'password123';
const roomId = BigInt(process.env.VEZA_ROOM || '1');

const protocols = [
  ['connect+json over HTTP/1.1 on the HTTP port', (i) =>
    createConnectTransport({ baseUrl: `http://${httpAddr}`, httpVersion: '1.1', interceptors: i })],
  ['grpc-web over HTTP/1.1 on the HTTP port', (i) =>
    createGrpcWebTransport({ baseUrl: `http://${httpAddr}`, httpVersion: '1.1', interceptors: i })],
  ['connect+proto over HTTP/2 on the gRPC port', (i) =>
    createConnectTransport({ baseUrl: `http://${grpcAddr}`, httpVersion: '2', useBinaryFormat: true, interceptors: i })],
  ['grpc over HTTP/2 on the gRPC port', (i) =>
    createGrpcTransport({ baseUrl: `http://${grpcAddr}`, interceptors: i })],
];

// The seed's interceptor: the token in the metadata of every call, unary or streaming.
function bearer(session) {
  return (next) => async (req) => {
    if (session.token) req.header.set('authorization', `Bearer ${session.token}`);
    return next(req);
  };
}

async function session(name, transportFor) {
  const state = {};
  const transport = transportFor([bearer(state)]);
  const auth = createClient(AuthService, transport);
  const chat = createClient(ChatService, transport);

  const login = await auth.authenticate({ email, password });
  state.token = login.accessToken;
  const me = await auth.getUserInfo({});
  console.log(`[${name}] Authenticated as ${me.userInfo.email} (user ${me.userInfo.userId})`);

  const sent = (await chat.sendMessage({ roomId, content: `Hello over ${name}!` })).message;
  console.log(`[${name}] Message sent: id ${sent.messageId} in room ${sent.roomId}`);

  const stop = new AbortController();
  const stream = chat.streamMessages({ roomId, lastMessageId: sent.messageId - 1n }, { signal: stop.signal });
  for await (const m of stream) {
    console.log(`[${name}] Received message: ${m.content} (id ${m.messageId}, from user ${m.userId})`);
    stop.abort();
    break;
  }

  try {
    await auth.authenticate({ email, password: 'not the password' });
    throw new Error('a wrong password was accepted');
  } catch (err) {
    const e = ConnectError.from(err);
    if (e.code !== Code.Unauthenticated) throw e;
    console.log(`[${name}] Wrong password refused: ${Code[e.code]}: ${e.rawMessage}`);
  }
}

for (const [name, transportFor] of protocols) {
  await session(name, transportFor);
}
console.log('All protocols passed');

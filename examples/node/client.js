// The platform document's Node.js client, made correct: the services live in their own packages
// (veza.auth.AuthService, veza.chat.ChatService), the token travels as `authorization: Bearer`
// metadata, and the stream resumes from the last message id so the message just sent comes back.
//
// Usage: node client.js   (VEZA_ADDR=localhost:9090, VEZA_EMAIL, VEZA_PASSWORD, VEZA_ROOM,
// VEZA_MAX_MESSAGES: stop after that many streamed messages; 0 = follow forever)
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const addr = process.env.VEZA_ADDR || 'localhost:9090';
const email = process.env.VEZA_EMAIL || 'user@veza.app';
const password = process.env.VEZA_PASSWORD || 'password123';
const roomId = process.env.VEZA_ROOM || '1';
const maxMessages = Number(process.env.VEZA_MAX_MESSAGES || '0');

const packageDefinition = protoLoader.loadSync('veza.proto', {
  includeDirs: [path.join(__dirname, '..', '..', 'proto')],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const veza = grpc.loadPackageDefinition(packageDefinition).veza;

const credentials = grpc.credentials.createInsecure();
const authClient = new veza.auth.AuthService(addr, credentials);
const chatClient = new veza.chat.ChatService(addr, credentials);

function authenticate() {
  return new Promise((resolve, reject) => {
    authClient.Authenticate({ email, password }, (err, response) => (err ? reject(err) : resolve(response.access_token)));
  });
}

function withToken(token) {
  const metadata = new grpc.Metadata();
  metadata.add('authorization', `Bearer ${token}`);
  return metadata;
}

function sendMessage(token, content) {
  return new Promise((resolve, reject) => {
    chatClient.SendMessage({ room_id: roomId, content }, withToken(token), (err, response) =>
      err ? reject(err) : resolve(response.message),
    );
  });
}

function streamMessages(token, lastMessageId) {
  return new Promise((resolve, reject) => {
    const stream = chatClient.StreamMessages({ room_id: roomId, last_message_id: lastMessageId }, withToken(token));
    let received = 0;
    stream.on('data', (message) => {
      console.log(`Received message: ${message.content} (id ${message.message_id}, from user ${message.user_id})`);
      received += 1;
      if (maxMessages > 0 && received >= maxMessages) {
        stream.cancel();
        resolve();
      }
    });
    stream.on('error', (error) => {
      if (error.code === grpc.status.CANCELLED) return resolve();
      reject(error);
    });
    stream.on('end', resolve);
  });
}

async function main() {
  const token = await authenticate();
  console.log('Authenticated successfully');
  const sent = await sendMessage(token, 'Hello from Node.js client!');
  console.log(`Message sent: id ${sent.message_id} in room ${sent.room_id}`);
  await streamMessages(token, String(BigInt(sent.message_id) - 1n));
}

main().catch((error) => {
  console.error('Error:', error.message || error);
  process.exit(1);
});

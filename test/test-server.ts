/**
 * A loopback HTTP server for client tests, counting its connections and requests, and closing
 * every server it started with {@link closeTestServers}.
 */
import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

/** A running test server. */
export interface TestServer {
  url: string;
  port: number;
  /** Connections accepted so far. */
  connections: () => number;
  /** Requests received so far. */
  requests: () => number;
  /** Resolves when a socket of this server closes next (server side). */
  nextClose: () => Promise<void>;
  server: Server;
}

const running: Server[] = [];

/** Start a server on a free loopback port; `socketRequests` is the request's number on its socket. */
export async function serve(handler: (req: IncomingMessage, res: ServerResponse, socketRequests: number) => void): Promise<TestServer> {
  let connections = 0;
  let requests = 0;
  const perSocket = new WeakMap<Socket, number>();
  const closeWaiters: Array<() => void> = [];
  const server = createServer((req, res) => {
    requests++;
    const n = (perSocket.get(req.socket) ?? 0) + 1;
    perSocket.set(req.socket, n);
    handler(req, res, n);
  });
  server.on("connection", (socket: Socket) => {
    connections++;
    socket.on("close", () => closeWaiters.shift()?.());
  });
  running.push(server);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    connections: () => connections,
    requests: () => requests,
    nextClose: () => new Promise<void>((resolve) => closeWaiters.push(resolve)),
    server,
  };
}

/** Close every server {@link serve} started (an afterEach). */
export async function closeTestServers(): Promise<void> {
  await Promise.all(
    running.splice(0).map((s) => {
      s.closeAllConnections();
      return new Promise<void>((resolve) => s.close(() => resolve()));
    }),
  );
}

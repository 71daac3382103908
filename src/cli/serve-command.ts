import { once } from 'node:events';

import { createApp, listen } from '../api/server.ts';
import { ReidbError } from '../errors.ts';
import { createEngine } from '../engine/pool.ts';
import { int, str, type FlagSpec } from './args.ts';
import { keepFusionModel, openCliGallery } from './gallery-location.ts';
import type { CommandContext, CommandOutput } from './main.ts';
import { engineOptions } from './options.ts';

export const SERVE_FLAGS: FlagSpec = { db: true, port: true, host: true, 'max-upload-mb': true };

/**
 * `reidb serve`: starts the HTTP API and runs until SIGINT or SIGTERM. Prints one line (or,
 * with --json, one JSON document) with the bound address once it is listening.
 */
export async function serveCommand(ctx: CommandContext): Promise<CommandOutput> {
  const { args, logger } = ctx;
  const port = int(args, 'port', 0, 65535) ?? 8080;
  const host = str(args, 'host') ?? '127.0.0.1';
  const maxMb = int(args, 'max-upload-mb', 1, 1024) ?? 10;

  const gallery = await openCliGallery(ctx);
  const options = engineOptions(args, logger, gallery.config(), gallery.dir);
  const engine = await createEngine(options).catch((e) => {
    gallery.close();
    throw e;
  });
  keepFusionModel(gallery, engine, options.pipeline?.fusionModel);
  const app = createApp({ engine, gallery, logger, maxUploadBytes: maxMb * 1024 * 1024 });
  let server;
  try {
    server = await listen(app, port, host);
  } catch (e) {
    await engine.close();
    gallery.close();
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES') {
      throw new ReidbError(
        'port_in_use',
        `cannot listen on ${host}:${port}: ${(e as Error).message}`,
        {
          input: `${host}:${port}`,
        },
      );
    }
    throw e;
  }

  const address = server.address();
  const bound = typeof address === 'object' && address ? address.port : port;
  const url = `http://${host}:${bound}`;
  ctx.stdout(
    args.flags.json ? JSON.stringify({ listening: url }) + '\n' : `reidb listening on ${url}\n`,
  );

  await Promise.race([once(process, 'SIGINT'), once(process, 'SIGTERM')]);
  server.close();
  await engine.close();
  gallery.close();
  return { json: undefined, text: 'reidb stopped' };
}

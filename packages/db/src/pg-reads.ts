import pg from 'pg';

// Shared by the reads that bypass Prisma (see `poolOf` in client.ts).

const TIMESTAMP = 1114;

/** Prisma writes DateTime columns as UTC into `timestamp without time zone`: read them as UTC. */
export const utcTimestamp = (text: string) => new Date(`${text.replace(' ', 'T')}Z`);

/**
 * pg's own parsers, except `timestamp without time zone`, which pg would read in the process's
 * local time zone: read as UTC, as Prisma reads it.
 */
export const prismaTypes: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === TIMESTAMP ? utcTimestamp : pg.types.getTypeParser(oid, format)) as pg.CustomTypesConfig['getTypeParser'],
};

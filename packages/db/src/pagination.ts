// Keyset pagination over (createdAt, id), newest first unless `order: 'asc'`. The cursor is the
// last row's id: Prisma resumes after it, so pages stay stable while new rows arrive.
export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface PageRequest {
  cursor?: string | undefined;
  limit: number;
  /** By creation time: 'desc' (newest first, the default) or 'asc'. */
  order?: 'asc' | 'desc' | undefined;
}

export function pageArgs({ cursor, limit, order = 'desc' }: PageRequest) {
  return {
    take: limit + 1,
    orderBy: [{ createdAt: order }, { id: order }],
    ...(cursor ? { cursor: { id: cursor }, skip: 1 } : {}),
  };
}

export function toPage<T extends { id: string }>(rows: T[], limit: number): Page<T> {
  const items = rows.slice(0, limit);
  return { items, nextCursor: rows.length > limit ? (items[items.length - 1]?.id ?? null) : null };
}

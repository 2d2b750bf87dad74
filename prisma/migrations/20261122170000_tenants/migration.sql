-- Identity: tenants own datasets, jobs and models; API keys belong to a tenant.
-- Rows that exist before this migration go to the default tenant (the one ADMIN_API_KEY acts in).

-- CreateEnum
CREATE TYPE "ApiKeyRole" AS ENUM ('admin', 'member');

-- DropIndex
DROP INDEX "jobs_createdAt_id_idx";

-- DropIndex
DROP INDEX "jobs_idempotencyKey_key";

-- CreateTable
CREATE TABLE "tenants" (
    "id" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "tenants_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "api_keys" (
    "id" UUID NOT NULL,
    "tenantId" UUID NOT NULL,
    "name" TEXT,
    "prefix" TEXT NOT NULL,
    "keyHash" TEXT NOT NULL,
    "role" "ApiKeyRole" NOT NULL DEFAULT 'member',
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "revokedAt" TIMESTAMP(3),

    CONSTRAINT "api_keys_pkey" PRIMARY KEY ("id")
);

-- The default tenant (packages/db/src/tenants.repository.ts DEFAULT_TENANT_ID).
INSERT INTO "tenants" ("id", "name") VALUES ('00000000-0000-4000-8000-000000000000', 'default');

-- AlterTable (added nullable, backfilled, then NOT NULL: Prisma's generated form fails on non-empty tables)
ALTER TABLE "datasets" ADD COLUMN     "tenantId" UUID;
UPDATE "datasets" SET "tenantId" = '00000000-0000-4000-8000-000000000000';
ALTER TABLE "datasets" ALTER COLUMN "tenantId" SET NOT NULL;

-- AlterTable
ALTER TABLE "jobs" ADD COLUMN     "tenantId" UUID;
UPDATE "jobs" SET "tenantId" = '00000000-0000-4000-8000-000000000000';
ALTER TABLE "jobs" ALTER COLUMN "tenantId" SET NOT NULL;

-- AlterTable
ALTER TABLE "models" ADD COLUMN     "tenantId" UUID;
UPDATE "models" SET "tenantId" = '00000000-0000-4000-8000-000000000000';
ALTER TABLE "models" ALTER COLUMN "tenantId" SET NOT NULL;

-- CreateIndex
CREATE UNIQUE INDEX "api_keys_prefix_key" ON "api_keys"("prefix");

-- CreateIndex
CREATE INDEX "api_keys_tenantId_idx" ON "api_keys"("tenantId");

-- CreateIndex
CREATE INDEX "datasets_tenantId_createdAt_id_idx" ON "datasets"("tenantId", "createdAt", "id");

-- CreateIndex
CREATE INDEX "jobs_tenantId_createdAt_id_idx" ON "jobs"("tenantId", "createdAt", "id");

-- CreateIndex
CREATE UNIQUE INDEX "jobs_tenantId_idempotencyKey_key" ON "jobs"("tenantId", "idempotencyKey");

-- CreateIndex
CREATE INDEX "models_tenantId_idx" ON "models"("tenantId");

-- AddForeignKey
ALTER TABLE "api_keys" ADD CONSTRAINT "api_keys_tenantId_fkey" FOREIGN KEY ("tenantId") REFERENCES "tenants"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "datasets" ADD CONSTRAINT "datasets_tenantId_fkey" FOREIGN KEY ("tenantId") REFERENCES "tenants"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_tenantId_fkey" FOREIGN KEY ("tenantId") REFERENCES "tenants"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "models" ADD CONSTRAINT "models_tenantId_fkey" FOREIGN KEY ("tenantId") REFERENCES "tenants"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

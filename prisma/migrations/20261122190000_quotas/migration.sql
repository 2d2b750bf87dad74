-- Quotas: a tenant may carry its own limits (null: the deployment's QUOTA_* defaults; 0: unlimited),
-- and models record their size so a tenant's stored bytes can be summed. Models that predate this
-- migration count as 0 bytes.

-- AlterTable
ALTER TABLE "tenants" ADD COLUMN     "quotaConcurrentJobs" INTEGER,
ADD COLUMN     "quotaModels" INTEGER,
ADD COLUMN     "quotaStoredBytes" BIGINT;

-- AlterTable
ALTER TABLE "models" ADD COLUMN     "sizeBytes" BIGINT NOT NULL DEFAULT 0;

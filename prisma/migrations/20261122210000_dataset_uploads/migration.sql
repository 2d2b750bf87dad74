-- Direct-to-storage dataset uploads: a row per presigned PUT URL handed out, completed into a
-- dataset or, never completed, expired by the API's sweep (which deletes the staged object).

-- CreateEnum
CREATE TYPE "DatasetUploadStatus" AS ENUM ('pending', 'completing', 'completed', 'expired');

-- CreateTable
CREATE TABLE "dataset_uploads" (
    "id" UUID NOT NULL,
    "tenantId" UUID NOT NULL,
    "storageKey" TEXT NOT NULL,
    "filename" TEXT NOT NULL,
    "sizeBytes" BIGINT NOT NULL,
    "name" TEXT,
    "status" "DatasetUploadStatus" NOT NULL DEFAULT 'pending',
    "expiresAt" TIMESTAMP(3) NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "datasetId" UUID,

    CONSTRAINT "dataset_uploads_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "dataset_uploads_tenantId_status_idx" ON "dataset_uploads"("tenantId", "status");

-- CreateIndex
CREATE INDEX "dataset_uploads_status_expiresAt_idx" ON "dataset_uploads"("status", "expiresAt");

-- AddForeignKey
ALTER TABLE "dataset_uploads" ADD CONSTRAINT "dataset_uploads_tenantId_fkey" FOREIGN KEY ("tenantId") REFERENCES "tenants"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "dataset_uploads" ADD CONSTRAINT "dataset_uploads_datasetId_fkey" FOREIGN KEY ("datasetId") REFERENCES "datasets"("id") ON DELETE SET NULL ON UPDATE CASCADE;

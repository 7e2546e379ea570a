-- A customer's country (ISO 3166 alpha-2, upper case; optional CSV column `country`): its public
-- holidays move the end of a whole-day window to the next working day and are skipped by business
-- days (EU Regulation 1182/71 Art. 3(3)-(4), docs/deadlines.md). NULL: Saturdays and Sundays only.
-- `recipients` freezes it with the other contract terms when sending starts (rule 3); recipients
-- snapshotted before this migration keep NULL, and their stored deadlines are unchanged.
ALTER TABLE customers ADD COLUMN country text;
ALTER TABLE recipients ADD COLUMN country text;

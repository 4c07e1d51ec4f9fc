from django.contrib import admin

from webapp.models import AnnotatorProfile, Item, Judge, Membership, Project

admin.site.register(Project)
admin.site.register(Membership)
admin.site.register(AnnotatorProfile)
admin.site.register(Judge)


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["external_id", "project", "route", "status"]
    list_filter = ["project", "route", "status"]
    search_fields = ["external_id"]
